"""Quick checks of the plain-PyTorch MDLM / EDLM reference sampler used as the end-to-end baseline."""

import math
from types import SimpleNamespace

import pytest
import torch

from reference_sampler import reference_sample

V = 20
MASK = 19


class RandomDenoiser:
    """A tiny context-dependent denoiser: logits = table[x_t] + per-position bias; the mask logit is huge."""

    def __init__(self, seq_len, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(V, V, generator=g)
        self.pos = torch.randn(seq_len, V, generator=g)
        self.inputs = []

    def __call__(self, x_t, sigma):
        assert x_t.dtype == torch.int64 and sigma.shape == (x_t.shape[0],)
        self.inputs.append(x_t.clone())
        logits = self.table[x_t] + self.pos[: x_t.shape[1]]
        logits[..., MASK] = 50.0  # must never be sampled
        return logits


class IndependentDenoiser:
    """Exact conditionals of i.i.d. tokens: the same distribution ``pi`` at every position, whatever x_t."""

    def __init__(self, logits_row):
        self.row = logits_row

    def __call__(self, x_t, sigma):
        return self.row.expand(x_t.shape[0], x_t.shape[1], -1).clone()


class UnigramLM(torch.nn.Module):
    """A context-free 'causal LM' with next-token distribution ``rho``, returning HF-style ``.logits``."""

    def __init__(self, logits_row):
        super().__init__()
        self.row = logits_row

    def forward(self, input_ids):
        return SimpleNamespace(logits=self.row.expand(input_ids.shape[0], input_ids.shape[1], -1).clone())


def _tiny_gpt2():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=19, n_positions=64)
    return transformers.GPT2LMHeadModel(config).eval()


def _check_tokens(tokens, n, seq_len):
    assert tokens.shape == (n, seq_len)
    assert tokens.dtype == torch.int64
    assert not (tokens == MASK).any()
    assert tokens.min() >= 0 and tokens.max() < MASK


@pytest.mark.parametrize("n", [1, 6])
def test_plain_sampler_shapes_and_cache(n):
    L, steps = 8, 200
    den = RandomDenoiser(L)
    g = torch.Generator().manual_seed(1)
    tokens, stats = reference_sample(den, MASK, n, L, steps, generator=g)
    _check_tokens(tokens, n, L)
    assert stats["energy_calls"] == 0 and stats["candidates_scored"] == 0 and stats["is_steps"] == 0
    assert math.isnan(stats["mean_ess"])
    # The cache is batch-wide, as in MDLM: a call is made only after a step that changed some token of the
    # batch, so at most n * L changes + the first call + the final fill.
    assert 1 <= stats["denoiser_calls"] == len(den.inputs) <= min(n * L, steps) + 2
    for a, b in zip(den.inputs, den.inputs[1:]):
        assert not torch.equal(a, b), "the cache must skip calls on unchanged inputs"
    assert (den.inputs[0] == MASK).all()
    assert stats["seconds"] > 0 and stats["tokens_per_second"] > 0 and stats["steps"] == steps


def test_batch_size_splits_and_reproducible():
    den = RandomDenoiser(5)
    a, sa = reference_sample(den, MASK, 7, 5, 10, batch_size=3, generator=torch.Generator().manual_seed(3))
    b, _ = reference_sample(den, MASK, 7, 5, 10, batch_size=3, generator=torch.Generator().manual_seed(3))
    _check_tokens(a, 7, 5)
    assert torch.equal(a, b)
    assert all(x.shape[0] in (3, 1) for x in den.inputs)
    assert sa["denoiser_calls"] >= 3  # at least one call per chunk


def test_few_steps_final_fill():
    # One step leaves most positions masked (p_unmask = (1 - eps) / 1 at t=1 -> s=eps is close to 1, so use
    # a wide eps): the final argmax fill must remove every mask.
    den = RandomDenoiser(16)
    tokens, stats = reference_sample(den, MASK, 4, 16, 1, eps=0.5, generator=torch.Generator().manual_seed(0))
    _check_tokens(tokens, 4, 16)
    assert stats["denoiser_calls"] in (1, 2)


@pytest.mark.parametrize("bos_id", [None, 0])
def test_gpt2_energy(bos_id):
    n, L, steps, k = 5, 8, 20, 3
    gpt2 = _tiny_gpt2()
    den = RandomDenoiser(L)
    g = torch.Generator().manual_seed(2)
    tokens, stats = reference_sample(
        den, MASK, n, L, steps, energy_model=gpt2, is_size=k, is_window=(0.5, 1.0), batch_size=2,
        bos_id=bos_id, generator=g,
    )
    _check_tokens(tokens, n, L)
    assert stats["energy_calls"] >= 3  # the first step of each of the 3 chunks is in the window
    assert stats["energy_calls"] == stats["is_steps"] <= stats["denoiser_calls"]
    assert stats["candidates_scored"] >= stats["energy_calls"] * 1
    assert stats["candidates_scored"] <= stats["energy_calls"] * k * 2
    assert 1.0 - 1e-4 <= stats["mean_ess"] <= k + 1e-4


def test_energy_window_excludes_steps():
    gpt2 = _tiny_gpt2()
    den = RandomDenoiser(6)
    tokens, stats = reference_sample(
        den, MASK, 3, 6, 10, energy_model=gpt2, is_window=(2.0, 3.0), generator=torch.Generator().manual_seed(0)
    )
    _check_tokens(tokens, 3, 6)
    assert stats["energy_calls"] == 0 and stats["candidates_scored"] == 0


def test_independent_tokens_match_distribution():
    g = torch.Generator().manual_seed(1234)
    row = torch.randn(V, generator=g)
    row[MASK] = 3.0  # ignored by the sampler
    pi = torch.softmax(row[:MASK].double(), dim=0)
    n, L, steps = 400, 16, 64
    tokens, stats = reference_sample(IndependentDenoiser(row), MASK, n, L, steps, generator=g)
    _check_tokens(tokens, n, L)
    N = tokens.numel()
    freq = torch.bincount(tokens.flatten(), minlength=MASK).double() / N
    se = (pi * (1 - pi) / N).sqrt()
    z = (freq - pi) / se
    assert z.abs().max() < 4.0, z
    assert stats["denoiser_calls"] <= steps + 1


def test_denoiser_without_a_mask_column():
    # The mask id lies one past the denoiser's logits: the q_xs step adds the mask entry as its own column.
    g = torch.Generator().manual_seed(5)
    row = torch.randn(MASK, generator=g)
    tokens, _ = reference_sample(IndependentDenoiser(row), MASK, 64, 8, 6, generator=g)
    _check_tokens(tokens, 64, 8)


def test_importance_weights_have_the_right_sign():
    # Denoiser uniform, energy model prefers token 3: softmax(-E) must raise the frequency of token 3;
    # softmax(+E) (the public code's sign) would lower it.
    uniform = torch.zeros(V)
    rho = torch.full((MASK,), -2.0)
    rho[3] = 2.0
    g = torch.Generator().manual_seed(7)
    n, L = 200, 8
    tokens, stats = reference_sample(
        IndependentDenoiser(uniform), MASK, n, L, 8, energy_model=UnigramLM(rho), is_size=8,
        is_window=(0.0, 1.0), bos_id=0, generator=g,
    )
    _check_tokens(tokens, n, L)
    freq3 = float((tokens == 3).double().mean())
    assert freq3 > 3.0 / MASK, freq3
    assert stats["energy_calls"] >= 1
