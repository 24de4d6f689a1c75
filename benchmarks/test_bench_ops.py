"""pytest-benchmark suite: edlm-engine's sampling ops against plain-PyTorch baselines.

What each benchmark measures and the figures of record are in ``benchmarks/README.md``.  The ``test_ratio_*``
tests time the compared providers in one run, interleaved, and assert the speed-ups the project claims.
"""

from __future__ import annotations

import functools
import os

import pytest
import torch

import harness
import reference
from edlm_engine import ops

SHAPE = (4, 256, 50257)  # B, L, V: GPT-2 vocabulary, a batch of four 256-token sequences
K = 4
CAT_SHAPE = (1024, 50257)
IS_SHAPE = (4096, 8)

ROUNDS = int(os.environ.get("EDLM_BENCH_ROUNDS", "3"))
RATIO_REPEATS = 3


def _shape_str(shape) -> str:
    return "x".join(map(str, shape))


@functools.lru_cache(maxsize=None)
def _candidate_inputs(device):
    return harness.candidate_inputs(SHAPE, device)


@functools.lru_cache(maxsize=None)
def _categorical_logits(device):
    return harness.make_logits(CAT_SHAPE, device, seed=1)


@functools.lru_cache(maxsize=None)
def _energies(device):
    g = torch.Generator().manual_seed(2)
    return (4.0 * torch.randn(*IS_SHAPE, generator=g)).to(device)


def _best_s(benchmark):
    return benchmark.stats.stats.min if benchmark.stats else None


def _fmt_s(seconds) -> str:
    if seconds is None:
        return "n/a (benchmark disabled)"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    return f"{seconds * 1e3:.2f} ms" if seconds < 0.1 else f"{seconds:.3f} s"


# --------------------------------------------------------------------------------------------------------------
# sample_candidates: k = 4 candidates for every position, all positions masked


@pytest.mark.parametrize("provider", list(harness.CANDIDATE_PROVIDERS))
def test_sample_candidates(benchmark, device, provider, figures):
    logits, x_t, mask_id = _candidate_inputs(device)
    mem = harness.candidates_peak_subprocess(provider, SHAPE, K, device)
    benchmark.group = f"sample_candidates k={K} [{_shape_str(SHAPE)}] {device}"
    benchmark.extra_info.update(
        peak_mb=mem["peak_mb"], logits_mb=mem["logits_mb"], peak_method=mem["method"], shape=list(SHAPE), k=K
    )

    fn = harness.CANDIDATE_PROVIDERS[provider]()
    # The Gumbel baselines allocate fresh multi-GB tensors that the allocator hands back to the OS after every
    # call, so each call pays the same page faults and a warmup round would only lengthen the suite.
    warmup = 0 if "gumbel" in provider else 1
    out = benchmark.pedantic(
        harness.timed(lambda: fn(logits, x_t, mask_id, K), device), rounds=ROUNDS, iterations=1, warmup_rounds=warmup
    )
    x0 = out[0] if isinstance(out, tuple) else out
    assert x0.shape == (K, *SHAPE[:2])
    assert not bool((x0 == mask_id).any())

    figures(
        f"sample_candidates {device} {provider:>17}: best {_fmt_s(_best_s(benchmark)):>9}, "
        f"peak extra {mem['peak_mb']:8.2f} MiB (one [B,L,V] float32 = {mem['logits_mb']:.1f} MiB; {mem['method']})"
    )
    if provider == "ours":
        assert mem["peak_mb"] < mem["logits_mb"], f"ours allocated {mem['peak_mb']} MiB: a [B, L, V] temporary?"


@pytest.mark.ratio
def test_ratio_sample_candidates(device, figures):
    logits, x_t, mask_id = _candidate_inputs(device)
    names = ("ours", "torch-fp32-gumbel", "torch-fp64-gumbel")
    fns = {}
    for name in names:
        fn = harness.CANDIDATE_PROVIDERS[name]()
        fns[name] = functools.partial(fn, logits, x_t, mask_id, K)
    fns["ours"]()
    best = harness.best_of_interleaved(fns, device, RATIO_REPEATS)
    r32 = best["torch-fp32-gumbel"] / best["ours"]
    r64 = best["torch-fp64-gumbel"] / best["ours"]
    figures(
        f"ratio sample_candidates {device} (best of {RATIO_REPEATS}): ours {_fmt_s(best['ours'])}, "
        f"fp32-gumbel {_fmt_s(best['torch-fp32-gumbel'])} ({r32:.1f}x), "
        f"fp64-gumbel {_fmt_s(best['torch-fp64-gumbel'])} ({r64:.1f}x)"
    )
    assert r64 >= 10, f"ours only {r64:.1f}x faster than float64 Gumbel-max ({best})"
    assert r32 >= 4, f"ours only {r32:.1f}x faster than float32 Gumbel-max ({best})"


# --------------------------------------------------------------------------------------------------------------
# sample_masked: one ancestral step, all positions masked


def _masked_fns(device):
    logits, x_t, mask_id = _candidate_inputs(device)
    counter = iter(range(10**9))

    def ours(p):
        return lambda: ops.sample_masked(logits, x_t, mask_id, p, seed=0, offset=next(counter))

    return {
        "ours-p=1/256": ours(1 / 256),
        "ours-p=1": ours(1.0),
        # Samples every position whatever p_unmask is, so one p is enough.
        "torch-reference-p=1/256": lambda: reference.masked_step_reference(logits, x_t, mask_id, 1 / 256),
    }


@pytest.mark.parametrize("provider", ["ours-p=1/256", "ours-p=1", "torch-reference-p=1/256"])
def test_sample_masked(benchmark, device, provider, figures):
    mask_id = SHAPE[2] - 1
    fn = _masked_fns(device)[provider]
    benchmark.group = f"sample_masked [{_shape_str(SHAPE)}] {device}"
    benchmark.extra_info.update(shape=list(SHAPE), p_unmask=provider.split("p=")[1])
    warmup = 0 if provider.startswith("torch") else 1
    x_s = benchmark.pedantic(harness.timed(fn, device), rounds=ROUNDS, iterations=1, warmup_rounds=warmup)
    assert x_s.shape == SHAPE[:2]
    if provider == "ours-p=1":
        assert not bool((x_s == mask_id).any())
    figures(f"sample_masked {device} {provider:>23}: best {_fmt_s(_best_s(benchmark))}")


@pytest.mark.ratio
def test_ratio_sample_masked(device, figures):
    fns = _masked_fns(device)
    fns["ours-p=1"]()
    best = harness.best_of_interleaved(fns, device, RATIO_REPEATS)
    ratio = best["ours-p=1"] / best["ours-p=1/256"]
    vs_ref = best["torch-reference-p=1/256"] / best["ours-p=1/256"]
    figures(
        f"ratio sample_masked {device} (best of {RATIO_REPEATS}): p=1/256 {_fmt_s(best['ours-p=1/256'])}, "
        f"p=1 {_fmt_s(best['ours-p=1'])} ({ratio:.1f}x); "
        f"torch reference {_fmt_s(best['torch-reference-p=1/256'])} ({vs_ref:.1f}x ours at p=1/256)"
    )
    assert ratio >= 20, f"p=1/256 only {ratio:.1f}x faster than p=1: are rows that stay masked being read? ({best})"


# --------------------------------------------------------------------------------------------------------------
# categorical: one draw per row of [1024, V] logits


@pytest.mark.parametrize("provider", ["torch-multinomial", "torch-multinomial-cumsum", "ours"])
def test_categorical(benchmark, device, provider, figures):
    logits = _categorical_logits(device)
    if provider == "ours":
        counter = iter(range(10**9))

        def fn():
            return ops.categorical(logits, 1, seed=0, offset=next(counter))[0]

    elif provider == "torch-multinomial":

        def fn():
            return reference.categorical_multinomial(logits, 1)

    else:

        def fn():
            return reference.categorical_multinomial_cumsum(logits)

    benchmark.group = f"categorical num_samples=1 [{_shape_str(CAT_SHAPE)}] {device}"
    nbytes = logits.numel() * logits.element_size()
    benchmark.extra_info.update(shape=list(CAT_SHAPE), logits_bytes=nbytes)
    tokens = benchmark.pedantic(harness.timed(fn, device), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert tokens.shape == (CAT_SHAPE[0], 1)
    best = _best_s(benchmark)
    if best:
        # Bytes of logits over the best round: how close the op runs to a single streaming read.
        benchmark.extra_info["logits_gb_per_s"] = round(nbytes / best / 1e9, 3)
    gbps = f"{nbytes / best / 1e9:.2f} GB/s of logits" if best else ""
    figures(f"categorical {device} {provider:>24}: best {_fmt_s(best)} {gbps}")


# --------------------------------------------------------------------------------------------------------------
# importance_resample: one of k = 8 candidates for each of 4096 rows


@pytest.mark.parametrize("provider", ["torch-softmax-multinomial", "ours"])
def test_importance_resample(benchmark, device, provider, figures):
    energies = _energies(device)
    if provider == "ours":
        counter = iter(range(10**9))

        def fn():
            return ops.importance_resample(energies, seed=0, offset=next(counter))

    else:

        def fn():
            return reference.importance_resample_reference(energies)

    benchmark.group = f"importance_resample [{_shape_str(IS_SHAPE)}] {device}"
    benchmark.extra_info.update(shape=list(IS_SHAPE))
    # Microseconds per call: let pytest-benchmark calibrate rounds and iterations.
    index, ess = benchmark(harness.timed(fn, device))
    assert index.shape == (IS_SHAPE[0],) and ess.shape == (IS_SHAPE[0],)
    assert bool(((ess >= 1 - 1e-9) & (ess <= IS_SHAPE[1] + 1e-9)).all())
    figures(f"importance_resample {device} {provider:>25}: best {_fmt_s(_best_s(benchmark))}")


# --------------------------------------------------------------------------------------------------------------
# speculative_verify: K = 16 particles of B = 2 sequences, a window of W = 8, the GPT-2 vocabulary

VERIFY_SHAPE = (2, 16, 8, 50257)  # B, K, W, V


def _verify_inputs(device):
    B, K, W, V = VERIFY_SHAPE
    g = torch.Generator().manual_seed(0)
    d = (torch.randn(B, W + 1, V, generator=g) * 3).to(device)
    a = d.repeat_interleave(K, 0) + torch.randn(B * K, W + 1, V, generator=g).to(device)  # an AR model near the drafter
    tokens, _ = ops.categorical(d[:, :W].reshape(-1, V), K, seed=1)
    drafts = tokens.view(B, W, K).transpose(1, 2).reshape(B * K, W)
    u = ops.uniform((B * K, W + 1), seed=0, device=device)
    return d, a, drafts, torch.full((B * K,), W + 1, device=device), u


def _verify_fns(device):
    d, a, drafts, n_valid, u = _verify_inputs(device)
    return {
        "ours": lambda: ops.speculative_verify(d, a, drafts, n_valid, poe_weight=0.5, seed=0)[:2],
        "torch-fp64": lambda: reference.speculative_verify_reference(d, a, drafts, u, 0.5),
    }


@pytest.mark.parametrize("provider", ["ours", "torch-fp64"])
def test_speculative_verify(benchmark, device, provider, figures):
    fn = _verify_fns(device)[provider]
    benchmark.group = f"speculative_verify [{_shape_str(VERIFY_SHAPE)}] {device}"
    benchmark.extra_info.update(shape=list(VERIFY_SHAPE))
    n_acc, fix = benchmark.pedantic(harness.timed(fn, device), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert n_acc.shape == fix.shape == (VERIFY_SHAPE[0] * VERIFY_SHAPE[1],)
    peak, method = harness.peak_extra_mb(fn, device)
    figures(f"speculative_verify {device} {provider:>10}: best {_fmt_s(_best_s(benchmark))}, peak extra "
            f"{peak:.1f} MiB ({method})")


@pytest.mark.ratio
def test_ratio_speculative_verify(device, figures):
    fns = _verify_fns(device)
    best = harness.best_of_interleaved(fns, device, RATIO_REPEATS)
    peaks = {name: harness.peak_extra_mb(fn, device)[0] for name, fn in fns.items()}
    r = best["torch-fp64"] / best["ours"]
    figures(f"ratio speculative_verify {device} (best of {RATIO_REPEATS}): ours {_fmt_s(best['ours'])} "
            f"({peaks['ours']:.1f} MiB), torch-fp64 {_fmt_s(best['torch-fp64'])} ({peaks['torch-fp64']:.1f} MiB): "
            f"{r:.1f}x")
    B, K, W, V = VERIFY_SHAPE
    one_window_fp64 = B * K * (W + 1) * V * 8 / 2**20
    assert peaks["ours"] < 0.25 * one_window_fp64, f"ours holds {peaks['ours']:.1f} MiB: a float64 window copy?"
