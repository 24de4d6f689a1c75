"""Tests of the sampling ops, one shared body per device (CUDA runs skip where there is no GPU)."""

import math

import numpy as np
import pytest
import torch

from edlm_engine import ops

from .stats import P_4SE, binomial_z, chi_square_pvalue


def _logits(V, seed, scale=2.0, rows=1, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, V, generator=g, dtype=torch.float64) * scale).to(dtype).to(device)


# ---------------------------------------------------------------- categorical: exactness


@pytest.mark.parametrize("V", [2, 1000, 50257, 262144])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_categorical_frequencies_match_float64_softmax(device, V, temperature):
    logits = _logits(V, seed=V, scale=3.0, device=device)
    n = 200_000
    tokens, logp = ops.categorical(logits, n, seed=11, temperature=temperature)
    probs = torch.softmax(logits.double().cpu() / temperature, -1)[0].numpy()
    counts = np.bincount(tokens[0].cpu().numpy(), minlength=V)
    p, stat, df = chi_square_pvalue(counts, probs)
    assert p > P_4SE, f"chi-square {stat:.1f} on {df} df (p={p:.2e})"
    ref = torch.log_softmax(logits.double().cpu() / temperature, -1)[0][tokens[0].cpu()]
    assert torch.allclose(logp[0].cpu(), ref, rtol=0, atol=1e-9)


def test_categorical_catches_a_biased_distribution():
    # The same test, fed the draws of a distribution off by 10% on one token, must reject it.
    logits = _logits(50, seed=3)
    tokens, _ = ops.categorical(logits, 200_000, seed=5)
    probs = torch.softmax(logits.double(), -1)[0].numpy().copy()
    probs[int(np.argmax(probs))] *= 1.10
    probs /= probs.sum()
    p, _, _ = chi_square_pvalue(np.bincount(tokens[0].numpy(), minlength=50), probs)
    assert p < P_4SE


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_logits_sample_their_own_values_exactly(device, dtype):
    logits = _logits(3000, seed=7, rows=4, dtype=dtype, device=device)
    t_low, lp_low = ops.categorical(logits, 64, seed=3)
    t_f32, lp_f32 = ops.categorical(logits.float(), 64, seed=3)
    assert torch.equal(t_low, t_f32)
    assert torch.equal(lp_low, lp_f32)


def test_temperature_zero_is_argmax(device):
    logits = _logits(1000, seed=1, rows=8, device=device)
    logits[3, 10] = logits[3].max() + 1  # a clear maximum
    logits[5, :] = 0.0  # all tied: lowest index wins
    tokens, logp = ops.categorical(logits, 3, seed=0, temperature=0.0)
    assert torch.equal(tokens[:, 0].cpu(), logits.cpu().argmax(-1))
    assert tokens[5].tolist() == [0, 0, 0]
    assert (logp == 0).all()
    assert torch.equal(tokens[:, 0], tokens[:, 2])


def test_exclude_is_never_drawn(device):
    V = 64
    logits = torch.zeros(4, V, device=device)
    logits[:, 7] = 10.0  # the favourite is excluded
    exclude = [7, 0, 63, 7]
    tokens, logp = ops.categorical(logits, 20_000, seed=2, exclude=exclude)
    assert not torch.isin(tokens.cpu(), torch.tensor([0, 7, 63])).any()
    # renormalized over the 61 remaining equal logits
    assert torch.allclose(logp.cpu(), torch.full_like(logp.cpu(), -math.log(61)), atol=1e-12)
    counts = np.bincount(tokens.cpu().numpy().ravel(), minlength=V)
    probs = np.ones(V) / 61
    probs[[0, 7, 63]] = 0
    assert chi_square_pvalue(counts, probs)[0] > P_4SE


def test_exclude_everything_finite_is_an_error():
    logits = torch.tensor([[0.0, float("-inf"), 1.0]])
    with pytest.raises(ValueError, match="row 0"):
        ops.categorical(logits, seed=0, exclude=[0, 2])


def test_tail_race_default_precision_keeps_the_tail_and_fp32_gumbel_loses_it():
    # One token with probability 1 - 1e-3, 50256 sharing 1e-3: the float32 Gumbel-max of the reference code
    # caps the noise near 16.6 and almost never draws a tail token.
    V = 50257
    p = torch.full((V,), 1e-3 / (V - 1), dtype=torch.float64)
    p[0] = 1 - 1e-3
    logits = p.log().float()[None]
    n = 2_000_000
    tokens, _ = ops.categorical(logits, n, seed=123)
    tail = int((tokens != 0).sum())
    p_tail = float(torch.softmax(logits.double(), -1)[0, 1:].sum())
    assert abs(binomial_z(tail, n, p_tail)) < 4, f"tail {tail}, expected {n * p_tail:.0f}"

    n_g = 20_000  # each fp32-gumbel draw reads the whole row
    tokens_g, _ = ops.categorical(logits, n_g, seed=123, precision="fp32-gumbel")
    tail_g = int((tokens_g != 0).sum())
    assert binomial_z(tail_g, n_g, p_tail) < -4, f"fp32-gumbel tail {tail_g}, exact {n_g * p_tail:.0f}"


def test_fp32_gumbel_matches_distribution_away_from_the_tail():
    logits = _logits(20, seed=9)
    tokens, _ = ops.categorical(logits, 50_000, seed=4, precision="fp32-gumbel")
    probs = torch.softmax(logits.double(), -1)[0].numpy()
    assert chi_square_pvalue(np.bincount(tokens[0].numpy(), minlength=20), probs)[0] > P_4SE


def test_categorical_shapes(device):
    logits = _logits(10, seed=0, rows=6, device=device).reshape(2, 3, 10)
    tokens, logp = ops.categorical(logits, 5, seed=0)
    assert tokens.shape == (2, 3, 5) and logp.shape == (2, 3, 5)
    assert tokens.dtype == torch.int64 and logp.dtype == torch.float64
    single, _ = ops.categorical(logits[0, 0], seed=0)
    assert single.shape == (1,)
    v1, _ = ops.categorical(torch.zeros(3, 1, device=device), 4, seed=0)
    assert (v1 == 0).all()


# ---------------------------------------------------------------- determinism and the RNG contract


def test_same_seed_same_draws_other_offset_differs(device):
    logits = _logits(500, seed=2, rows=16, device=device)
    a, _ = ops.categorical(logits, 8, seed=9, offset=3)
    b, _ = ops.categorical(logits, 8, seed=9, offset=3)
    c, _ = ops.categorical(logits, 8, seed=9, offset=4)
    d, _ = ops.categorical(logits, 8, seed=10, offset=3)
    assert torch.equal(a, b)
    assert (a != c).float().mean() > 0.5
    assert (a != d).float().mean() > 0.5


def test_thread_count_does_not_change_draws():
    logits = _logits(5000, seed=4, rows=64)
    x_t = torch.full((4, 16), 4999)
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(
                (
                    ops.categorical(logits, 4, seed=1)[0],
                    ops.sample_masked(logits.reshape(4, 16, 5000), x_t, 4999, 0.5, seed=1),
                    ops.sample_candidates(logits.reshape(4, 16, 5000), x_t, 4999, 3, seed=1)[0],
                    *ops.sample_scored(logits.reshape(4, 16, 5000), x_t, 4999, seed=1, top_k=40, top_p=0.9),
                    ops.categorical(logits, 4, seed=1, top_p=0.5, min_p=0.01)[0],
                )
            )
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_batch_split_with_row_offset_gives_the_same_draws(device):
    logits = _logits(300, seed=5, rows=12, device=device).reshape(4, 3, 300)
    x_t = torch.full((4, 3), 299, device=device)
    whole = ops.sample_candidates(logits, x_t, 299, 2, seed=7, offset=1)
    parts = [ops.sample_candidates(logits[i : i + 1], x_t[i : i + 1], 299, 2, seed=7, offset=1, row_offset=3 * i)
             for i in range(4)]
    assert torch.equal(whole[0], torch.cat([p[0] for p in parts], 1))
    assert torch.equal(whole[1], torch.cat([p[1] for p in parts], 1))
    full = ops.sample_masked(logits, x_t, 299, 0.5, seed=7)
    halves = [ops.sample_masked(logits[2 * i : 2 * i + 2], x_t[2 * i : 2 * i + 2], 299, 0.5, seed=7, row_offset=6 * i)
              for i in range(2)]
    assert torch.equal(full, torch.cat(halves))


# ---------------------------------------------------------------- sample_masked


def test_sample_masked_unmask_rate_per_row(device):
    B, L, V, mask = 4, 4096, 8, 7
    logits = _logits(V, seed=1, rows=B * L, device=device).reshape(B, L, V)
    x_t = torch.full((B, L), mask, device=device)
    p = torch.tensor([0.1, 0.5, 0.9, 1 / 256], dtype=torch.float64)
    x_s = ops.sample_masked(logits, x_t, mask, p.to(device), seed=3).cpu()
    for b in range(B):
        unmasked = int((x_s[b] != mask).sum())
        assert abs(binomial_z(unmasked, L, float(p[b]))) < 4
    scalar = ops.sample_masked(logits, x_t, mask, 0.25, seed=3).cpu()
    assert abs(binomial_z(int((scalar != mask).sum()), B * L, 0.25)) < 4


def test_sample_masked_token_distribution_and_copy(device):
    B, L, V, mask = 2, 20_000, 6, 2
    logits = _logits(V, seed=8, device=device).expand(B * L, V).reshape(B, L, V)
    x_t = torch.full((B, L), mask, device=device)
    x_t[:, ::4] = 5  # already clean: copied
    x_s = ops.sample_masked(logits, x_t, mask, 1.0, seed=0).cpu()
    assert (x_s[:, ::4] == 5).all()
    drawn = x_s[x_t.cpu() == mask]
    assert (drawn != mask).all()
    probs = torch.softmax(logits[0, 0].double().cpu(), -1)
    probs[mask] = 0
    probs /= probs.sum()
    assert chi_square_pvalue(np.bincount(drawn.numpy(), minlength=V), probs.numpy())[0] > P_4SE


def test_sample_masked_equals_categorical_draw_zero(device):
    logits = _logits(700, seed=6, rows=10, device=device).reshape(2, 5, 700)
    x_t = torch.full((2, 5), 3, device=device)
    x_s = ops.sample_masked(logits, x_t, 3, 1.0, seed=4, offset=2)
    tokens, _ = ops.categorical(logits.reshape(10, 700), 1, seed=4, offset=2, exclude=[3])
    assert torch.equal(x_s.reshape(-1), tokens[:, 0])


def test_sample_masked_fp32_gumbel_takes_the_reference_step(device):
    # One Gumbel argmax over p_unmask * softmax and the mask entry: away from the 2^-24 scale of the noise cap
    # it has the exact step's law (unmask rate and token frequencies); the cap itself shows in the 50k-vocabulary
    # rows of benchmarks/quality.
    B, L, V, mask = 2, 20_000, 6, 2
    logits = _logits(V, seed=8, device=device).expand(B * L, V).reshape(B, L, V)
    x_t = torch.full((B, L), mask, device=device)
    p = torch.tensor([0.3, 0.8], dtype=torch.float64, device=device)
    x_s = ops.sample_masked(logits, x_t, mask, p, seed=5, precision="fp32-gumbel").cpu()
    probs = torch.softmax(logits[0, 0].double().cpu(), -1)
    probs[mask] = 0
    probs /= probs.sum()
    for b in range(B):
        drawn = x_s[b][x_s[b] != mask]
        assert abs(binomial_z(drawn.numel(), L, float(p[b]))) < 4
        assert chi_square_pvalue(np.bincount(drawn.numpy(), minlength=V), probs.numpy())[0] > P_4SE
    everything = ops.sample_masked(logits, x_t, mask, 1.0, seed=5, precision="fp32-gumbel")
    assert (everything != mask).all()
    assert torch.equal(ops.sample_masked(logits, x_t, mask, 0.0, seed=5, precision="fp32-gumbel"), x_t)


def test_sample_masked_never_reads_rows_that_stay_masked(device):
    B, L, V, mask = 2, 64, 10, 0
    logits = torch.full((B, L, V), float("nan"), device=device)
    x_t = torch.full((B, L), mask, device=device)
    x_s = ops.sample_masked(logits, x_t, mask, 0.0, seed=0)
    assert torch.equal(x_s, x_t)
    x_t[:, :] = 3  # clean rows are copied, never read either
    assert torch.equal(ops.sample_masked(logits, x_t, mask, 1.0, seed=0), x_t)


# ---------------------------------------------------------------- sample_candidates


def test_sample_candidates_log_q_is_the_float64_sum(device):
    B, L, V, mask, k = 3, 40, 1000, 999, 5
    logits = _logits(V, seed=12, rows=B * L, device=device).reshape(B, L, V)
    x_t = torch.full((B, L), mask, device=device)
    x_t[:, 1::3] = 17
    x0, log_q = ops.sample_candidates(logits, x_t, mask, k, seed=2)
    assert x0.shape == (k, B, L) and log_q.shape == (k, B)
    x0, log_q = x0.cpu(), log_q.cpu()
    ref_lp = logits.double().cpu().clone()
    ref_lp[..., mask] = float("-inf")
    ref_lp = torch.log_softmax(ref_lp, -1)
    masked = x_t.cpu() == mask
    for j in range(k):
        assert torch.equal(x0[j][~masked], x_t.cpu()[~masked])
        assert not (x0[j][masked] == mask).any()
        per_pos = ref_lp.gather(-1, x0[j].unsqueeze(-1)).squeeze(-1) * masked
        expect = per_pos.sum(-1)
        assert torch.allclose(log_q[j], expect, rtol=1e-9, atol=0)
    assert (x0[0] != x0[1])[masked].float().mean() > 0.5


def test_sample_candidates_equal_categorical_draws(device):
    logits = _logits(333, seed=1, rows=6, device=device).reshape(2, 3, 333)
    x_t = torch.full((2, 3), 0, device=device)
    x0, _ = ops.sample_candidates(logits, x_t, 0, 4, seed=8, offset=5)
    tokens, _ = ops.categorical(logits.reshape(6, 333), 4, seed=8, offset=5, exclude=[0])
    assert torch.equal(x0.reshape(4, 6), tokens.T)


# ---------------------------------------------------------------- importance_resample


def test_importance_resample_frequencies_and_ess(device):
    E = torch.tensor([0.0, 1.0, 2.5, float("inf"), -0.5, 0.3], dtype=torch.float64)
    B = 100_000
    for temperature in (1.0, 2.0):
        index, ess = ops.importance_resample(E.expand(B, -1).to(device), seed=1, temperature=temperature)
        w = torch.softmax(-E / temperature, 0)
        counts = np.bincount(index.cpu().numpy(), minlength=6)
        assert counts[3] == 0
        assert chi_square_pvalue(counts, w.numpy())[0] > P_4SE
        expected_ess = float(w.sum() ** 2 / (w**2).sum())
        assert torch.allclose(ess.cpu(), torch.full((B,), expected_ess, dtype=torch.float64), rtol=1e-12)


def test_importance_resample_uses_minus_energy():
    # Low energy = high weight: the reference's softmax(+E) sign would pick index 1 here.
    index, _ = ops.importance_resample(torch.tensor([[0.0, 50.0]]).expand(1000, -1), seed=0)
    assert (index == 0).all()


def test_importance_resample_temperature_zero_and_errors(device):
    E = torch.tensor([[3.0, 1.0, 1.0, 2.0]], device=device).expand(2000, -1)
    index, ess = ops.importance_resample(E, seed=0, temperature=0.0)
    assert set(index.cpu().tolist()) == {1, 2}
    assert (ess == 2).all()
    for bad, why in ((float("inf"), "every energy"), (float("nan"), "NaN"), (float("-inf"), "-inf")):
        E2 = torch.zeros(3, 2, device=device)
        E2[1, :] = bad
        with pytest.raises(ValueError, match=f"row 1 .*{why}" if why != "NaN" else "row 1 contains NaN"):
            ops.importance_resample(E2, seed=0)


# ---------------------------------------------------------------- bad input


def test_nan_or_inf_in_a_read_row_names_the_row(device):
    logits = _logits(50, seed=0, rows=6, device=device)
    logits[4, 7] = float("nan")
    with pytest.raises(ValueError, match="row 4 contains NaN"):
        ops.categorical(logits, seed=0)
    logits[4, 7] = float("-inf")
    logits[2, :] = float("-inf")
    with pytest.raises(ValueError, match="row 2 has no finite logit"):
        ops.categorical(logits, seed=0)
    logits[2, :] = 0
    logits[1, 3] = float("inf")
    with pytest.raises(ValueError, match=r"row 1 contains \+inf"):
        ops.categorical(logits, seed=0)
    l3 = _logits(50, seed=0, rows=6, device=device).reshape(2, 3, 50)
    l3[1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match=r"logits\[1, 2\] contains NaN"):
        ops.sample_candidates(l3, torch.full((2, 3), 49, device=device), 49, 2, seed=0)


def test_a_row_with_nan_and_inf_is_a_nan_row(device):
    # +inf and NaN in different lanes and tiles: the GPU's warps see them in any order, the answer is fixed.
    logits = torch.zeros(3, 3000, device=device)
    logits[1, 5] = float("inf")
    logits[1, 2500] = float("nan")
    with pytest.raises(ValueError, match="row 1 contains NaN"):
        ops.categorical(logits, seed=0)


def test_exclude_takes_an_int_a_sequence_or_a_tensor(device):
    logits = torch.zeros(2, 10, device=device)
    a = ops.categorical(logits, 50, seed=1, exclude=7)[0]
    b = ops.categorical(logits, 50, seed=1, exclude=np.int64(7))[0]
    c = ops.categorical(logits, 50, seed=1, exclude=torch.tensor([7, 7], device=device))[0]
    assert torch.equal(a, b) and torch.equal(a, c) and not (a == 7).any()
    with pytest.raises(ValueError, match=r"exclude ids must be in \[0, V\) = \[0, 10\)"):
        ops.categorical(logits, seed=1, exclude=[3, -2])
    with pytest.raises(TypeError, match="exclude must be a token id"):
        ops.categorical(logits, seed=1, exclude="7")


def test_p_unmask_out_of_range_names_the_sequence(device):
    logits = torch.zeros(3, 4, 5, device=device)
    x_t = torch.full((3, 4), 4, device=device)
    p = torch.tensor([0.5, 0.5, float("nan")], dtype=torch.float64, device=device)
    with pytest.raises(ValueError, match=r"p_unmask must lie in \[0, 1\]; p_unmask\[2\]"):
        ops.sample_masked(logits, x_t, 4, p, seed=0)


def test_empty_sequences_give_zero_log_q(device):
    logits = torch.zeros(3, 0, 5, device=device)
    x0, log_q = ops.sample_candidates(logits, torch.zeros(3, 0, dtype=torch.long, device=device), 4, 2, seed=0)
    assert x0.shape == (2, 3, 0) and torch.equal(log_q.cpu(), torch.zeros(2, 3, dtype=torch.float64))
    x0, log_q = ops.sample_candidates(torch.zeros(0, 4, 5, device=device), torch.zeros(0, 4, dtype=torch.long,
                                      device=device), 4, 2, seed=0)
    assert x0.shape == (2, 0, 4) and log_q.shape == (2, 0)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda l, x: ops.sample_masked(l, x, 10, 0.5, seed=0), ValueError, "mask_id"),
        (lambda l, x: ops.sample_masked(l, x, -1, 0.5, seed=0), ValueError, "mask_id"),
        (lambda l, x: ops.sample_candidates(l, x, 3, 0, seed=0), ValueError, "k must be"),
        (lambda l, x: ops.sample_masked(l, x, 3, 0.5, seed=0, temperature=-1.0), ValueError, "temperature"),
        (lambda l, x: ops.sample_masked(l, x, 3, 1.5, seed=0), ValueError, "p_unmask"),
        (lambda l, x: ops.sample_masked(l, x, 3, torch.tensor([0.5, -0.1]), seed=0), ValueError, "p_unmask"),
        (lambda l, x: ops.sample_masked(l, x, 3, torch.tensor([0.5, 0.5, 0.5]), seed=0), ValueError, "p_unmask"),
        (lambda l, x: ops.sample_masked(l.long(), x, 3, 0.5, seed=0), TypeError, "float32, float16 or bfloat16"),
        (lambda l, x: ops.sample_masked(l, x[:, :3], 3, 0.5, seed=0), ValueError, "x_t"),
        (lambda l, x: ops.sample_masked(l, x.to("meta"), 3, 0.5, seed=0), ValueError, "same device"),
        (lambda l, x: ops.sample_candidates(l, x, 3, 2, seed=-1), ValueError, "seed"),
        (lambda l, x: ops.sample_candidates(l, x, 3, 2, seed=0, precision="fp16"), ValueError, "precision"),
        (lambda l, x: ops.categorical(l[0], 0, seed=0), ValueError, "num_samples"),
        (lambda l, x: ops.categorical(l[0], 1, seed=0, exclude=[10]), ValueError, "exclude"),
        (lambda l, x: ops.categorical(l.transpose(1, 2)[0], seed=0), ValueError, "contiguous last dimension"),
    ],
)
def test_bad_input_is_a_clear_error(call, exc, match):
    logits = torch.randn(2, 4, 10)
    x_t = torch.full((2, 4), 3)
    with pytest.raises(exc, match=match):
        call(logits, x_t)


def test_native_checks_back_the_wrappers():
    # Calling the registered op directly (as torch.compile would) still names the bad argument.
    with pytest.raises(ValueError, match="mask_id"):
        torch.ops.edlm_engine.sample_masked(torch.randn(1, 2, 5), torch.zeros(1, 2, dtype=torch.long), 7,
                                            torch.tensor(0.5, dtype=torch.float64), 0, 0, 1.0, "fp64", 0, 1.0, 0.0, 0)
    with pytest.raises(ValueError, match="p_unmask"):
        torch.ops.edlm_engine.sample_masked(torch.randn(1, 2, 5), torch.zeros(1, 2, dtype=torch.long), 0,
                                            torch.tensor(2.0, dtype=torch.float64), 0, 0, 1.0, "fp64", 0, 1.0, 0.0, 0)
    with pytest.raises(TypeError, match="bfloat16"):
        torch.ops.edlm_engine.categorical(torch.zeros(2, 3, dtype=torch.float64), 1, 0, 0, 1.0, None, "fp64", 0, 1.0,
                                          0.0, 0)
    with pytest.raises(ValueError, match="top_p must be in"):
        torch.ops.edlm_engine.sample_scored(torch.randn(1, 2, 5), torch.zeros(1, 2, dtype=torch.long), 0, 0, 0, 1.0,
                                            0, 1.5, 0.0, 0)
    with pytest.raises(ValueError, match="need precision 'fp64'"):
        torch.ops.edlm_engine.categorical(torch.zeros(2, 3), 1, 0, 0, 1.0, None, "fp32-gumbel", 2, 1.0, 0.0, 0)


def test_strided_rows_are_read_in_place(device):
    big = _logits(400, seed=3, rows=8, device=device)
    view = big[::2, :300]  # row stride 800, last dim contiguous
    a, _ = ops.categorical(view, 6, seed=1)
    b, _ = ops.categorical(view.contiguous(), 6, seed=1)
    assert torch.equal(a, b)


# ---------------------------------------------------------------- torch.library contract


def test_opcheck_every_op(device):
    logits = _logits(37, seed=0, rows=6, device=device).reshape(2, 3, 37)
    x_t = torch.full((2, 3), 36, device=device)
    x_t[0, 1] = 4
    p = torch.tensor([0.3, 0.9], dtype=torch.float64, device=device)
    ex = torch.tensor([1, 5], device=device)
    E = torch.randn(4, 3, dtype=torch.float64, device=device)
    cases = [
        (torch.ops.edlm_engine.categorical.default, (logits[0], 3, 1, 2, 1.0, ex, "fp64", 0, 1.0, 0.0, 0)),
        (torch.ops.edlm_engine.categorical.default, (logits[0], 2, 1, 2, 0.7, None, "fp32-gumbel", 0, 1.0, 0.0, 5)),
        (torch.ops.edlm_engine.categorical.default, (logits[0], 2, 1, 2, 0.7, None, "fp64", 5, 0.9, 0.01, 5)),
        (torch.ops.edlm_engine.sample_masked.default, (logits, x_t, 36, p, 1, 0, 1.0, "fp64", 3, 1.0, 0.0, 0)),
        (torch.ops.edlm_engine.sample_candidates.default, (logits, x_t, 36, 3, 1, 0, 1.0, "fp64", 0, 0.8, 0.0, 0)),
        (torch.ops.edlm_engine.sample_scored.default, (logits, x_t, 36, 1, 0, 0.9, 4, 0.95, 0.0, 3)),
        (torch.ops.edlm_engine.importance_resample.default, (E, 1, 0, 1.0, 0)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("V", [3, 1000, 50257, 151936])
def test_cpu_and_cuda_give_identical_tokens(dtype, V):
    B, L, k = 2, 16, 4
    logits = _logits(V, seed=V, rows=B * L, dtype=dtype).reshape(B, L, V)
    x_t = torch.full((B, L), 0)
    x_t[:, ::3] = 1
    E = torch.randn(64, 8, dtype=torch.float64)
    for temperature in (1.0, 0.7, 0.0):
        for precision in ("fp64", "fp32-gumbel"):
            kw = dict(seed=3, offset=1, temperature=temperature, precision=precision)
            for ex in (None, [V - 1, 0, V - 1]):
                cpu = ops.categorical(logits.reshape(-1, V), k, exclude=ex, **kw)
                gpu = ops.categorical(logits.reshape(-1, V).cuda(), k, exclude=ex, **kw)
                assert torch.equal(cpu[0], gpu[0].cpu())
                assert torch.allclose(cpu[1], gpu[1].cpu(), rtol=0, atol=1e-12)
            assert torch.equal(ops.sample_masked(logits, x_t, 0, 0.5, **kw),
                               ops.sample_masked(logits.cuda(), x_t.cuda(), 0, 0.5, **kw).cpu())
            c, g = ops.sample_candidates(logits, x_t, 0, k, **kw), ops.sample_candidates(logits.cuda(), x_t.cuda(), 0, k, **kw)
            assert torch.equal(c[0], g[0].cpu())
            assert torch.allclose(c[1], g[1].cpu(), rtol=1e-12, atol=0)
    assert torch.equal(ops.importance_resample(E, seed=2)[0], ops.importance_resample(E.cuda(), seed=2)[0].cpu())
    for filters in (dict(top_k=5), dict(top_p=0.7), dict(min_p=0.1), dict(top_k=50, top_p=0.9, min_p=0.01)):
        for temperature in (1.0, 0.0):
            kw = dict(seed=5, offset=2, temperature=temperature, **filters)
            for mask in (0, -1):  # -1: every position drawn, nothing excluded
                c = ops.sample_scored(logits, x_t, mask, **kw)
                g = ops.sample_scored(logits.cuda(), x_t.cuda(), mask, **kw)
                assert all(torch.equal(a, b.cpu()) for a, b in zip(c, g))  # tokens, scores to the bit, argmax
            assert torch.equal(ops.sample_masked(logits, x_t, 0, 0.5, **kw),
                               ops.sample_masked(logits.cuda(), x_t.cuda(), 0, 0.5, **kw).cpu())
            c, g = ops.sample_candidates(logits, x_t, 0, k, **kw), ops.sample_candidates(logits.cuda(), x_t.cuda(), 0,
                                                                                          k, **kw)
            assert torch.equal(c[0], g[0].cpu())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cpu_and_cuda_report_the_same_error():
    def message(fn, device):
        with pytest.raises(ValueError) as err:
            fn(device)
        return str(err.value).splitlines()[0]

    def nan_and_inf(device):
        logits = torch.zeros(4, 3000, device=device)
        logits[2, 7], logits[2, 2900], logits[3, 0] = float("inf"), float("nan"), float("nan")
        ops.categorical(logits, seed=0)

    def p_unmask(device):
        p = torch.tensor([0.1, 2.0], dtype=torch.float64, device=device)
        ops.sample_masked(torch.zeros(2, 3, 5, device=device), torch.full((2, 3), 4, device=device), 4, p, seed=0)

    def exclude(device):
        ops.categorical(torch.zeros(3, 5, device=device), seed=0, exclude=[1, 5])

    for fn in (nan_and_inf, p_unmask, exclude):
        assert message(fn, "cpu") == message(fn, "cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_each_op_call_syncs_with_the_host_at_most_once():
    import warnings

    V, B, L = 1000, 2, 8
    logits = torch.randn(B, L, V, device="cuda")
    x_t = torch.full((B, L), 0, device="cuda")
    p = torch.tensor([0.3, 0.6], dtype=torch.float64, device="cuda")
    ex = torch.tensor([5, 3, 5], device="cuda")
    calls = [
        lambda: ops.categorical(logits[0], 3, seed=0, exclude=ex),
        lambda: ops.sample_masked(logits, x_t, 0, p, seed=0),
        lambda: ops.sample_candidates(logits, x_t, 0, 4, seed=0),
        lambda: ops.importance_resample(torch.randn(B, 4, device="cuda"), seed=0),
        lambda: ops.sequence_logprob(logits, x_t),
        lambda: ops.sample_scored(logits, x_t, 0, seed=0, top_k=10, top_p=0.9),
    ]
    for call in calls:
        call()  # warm up allocator and kernels
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                call()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        syncs = [w for w in seen if "synchroniz" in str(w.message)]
        assert len(syncs) <= 1, [str(w.message) for w in syncs]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_workspace_is_bounded_and_absent_at_temperature_zero():
    # 65,536 rows of V = 151,936 (one row expanded: the logits take no memory of their own).
    V, B, L = 151_936, 64, 1024
    logits = torch.randn(1, 1, V, device="cuda", dtype=torch.bfloat16).expand(B, L, V)
    x_t = torch.zeros(B, L, dtype=torch.long, device="cuda")
    extra = {}
    for temperature in (1.0, 0.0):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        ops.sample_masked(logits, x_t, 0, 0.01, seed=0, temperature=temperature)
        torch.cuda.synchronize()
        extra[temperature] = (torch.cuda.max_memory_allocated() - base) / 2**20
    out_mb = B * L * 8 / 2**20  # x_s, int64, and a copy of x_t at most
    assert extra[1.0] < 2 * out_mb + 16, extra   # 156 MB when it was sized per row
    assert extra[0.0] < 2 * out_mb + 1, extra


def test_uniform_is_the_bernoulli_of_sample_masked(device):
    B, L, V, mask = 3, 50, 5, 4
    logits = _logits(V, seed=2, rows=B * L, device=device).reshape(B, L, V)
    x_t = torch.full((B, L), mask, device=device)
    p = torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64, device=device)
    x_s = ops.sample_masked(logits, x_t, mask, p, seed=6, offset=9, row_offset=100)
    u = ops.uniform((B, L), seed=6, offset=9, row_offset=100, device=device)
    assert u.dtype == torch.float64 and u.shape == (B, L)
    assert torch.equal(x_s != mask, u < p[:, None])
    many = ops.uniform((200_000,), seed=1).numpy()
    counts = np.histogram(many, bins=20, range=(0, 1))[0]
    assert chi_square_pvalue(counts, np.full(20, 0.05))[0] > P_4SE
    torch.library.opcheck(torch.ops.edlm_engine.uniform.default, (torch.empty(4, 2, device=device), 1, 2, 3))
