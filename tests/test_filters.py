"""top_k / top_p / min_p filters and the scores of sample_scored, against an exact float64 reference."""

import math

import numpy as np
import pytest
import torch

from edlm_engine import ops

from .stats import P_4SE, chi_square_pvalue


def filtered_probs(logits, temperature=1.0, top_k=None, top_p=None, min_p=None, exclude=()):
    """The filtered, renormalized distribution, written the plain way (sorting is fine in a test)."""
    z = logits.double() / (temperature if temperature > 0 else 1.0)
    z[list(exclude)] = float("-inf")
    keep = torch.isfinite(z) | (z == float("-inf"))
    keep[list(exclude)] = False
    if top_k is not None and top_k < int(keep.sum()):
        keep &= z >= z[keep].topk(top_k).values[-1]
    if top_p is not None and top_p < 1.0:
        p = torch.softmax(torch.where(keep, z, float("-inf")), -1)
        order = p.argsort(descending=True, stable=True)
        reach = int((p[order].cumsum(0) < top_p * p.sum()).sum())  # entries before the crossing one
        keep &= z >= z[order[min(reach, len(order) - 1)]]
    if min_p is not None and min_p > 0:
        keep &= z - z[keep].max() >= math.log(min_p)
    return torch.softmax(torch.where(keep, z, float("-inf")), -1), keep


def _row(V, seed, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(V, generator=g, dtype=torch.float64) * scale


CASES = [
    dict(top_k=7),
    dict(top_p=0.8),
    dict(min_p=0.05),
    dict(top_k=40, top_p=0.6),
    dict(top_k=200, top_p=0.9, min_p=0.01),
]


@pytest.mark.parametrize("V", [13, 5000])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_filtered_frequencies_are_exact_and_nothing_outside_is_drawn(device, V, case):
    logits = _row(V, seed=V + len(case)).float()
    for temperature in (1.0, 0.7):
        probs, keep = filtered_probs(logits, temperature, exclude=[V - 1], **case)
        tokens, logp = ops.categorical(logits[None].to(device), 200_000, seed=3, temperature=temperature,
                                       exclude=[V - 1], **case)
        tokens = tokens.cpu().ravel()
        assert keep[tokens].all()
        counts = np.bincount(tokens.numpy(), minlength=V)
        assert chi_square_pvalue(counts, probs.numpy())[0] > P_4SE
        assert torch.allclose(logp.cpu().ravel()[:100].exp(), probs[tokens[:100]], rtol=1e-9)


def test_the_same_test_catches_a_wrong_filter():
    logits = _row(500, seed=1).float()
    tokens, _ = ops.categorical(logits[None], 200_000, seed=3, top_p=0.8)
    wrong, _ = filtered_probs(logits, top_p=0.7)
    counts = np.bincount(tokens.ravel().numpy(), minlength=500)
    assert chi_square_pvalue(counts, wrong.numpy())[0] < P_4SE


def test_ties_and_the_crossing_token_are_kept(device):
    logits = torch.tensor([[3.0, 1.0, 3.0, 2.0, 1.0, 0.0]], device=device)
    tokens, _ = ops.categorical(logits, 20_000, seed=0, top_k=1)  # two tokens tie for the top
    assert set(tokens.cpu().ravel().tolist()) == {0, 2}
    p = torch.softmax(logits.double().cpu()[0], -1)
    tokens, _ = ops.categorical(logits, 20_000, seed=1, top_p=float(2 * p[0]) + 1e-6)  # crosses into the 2.0
    assert set(tokens.cpu().ravel().tolist()) == {0, 2, 3}
    tokens, _ = ops.categorical(logits, 1000, seed=1, top_p=float(2 * p[0]) - 1e-6)  # reached by the two 3.0s
    assert set(tokens.cpu().ravel().tolist()) == {0, 2}


def test_filters_in_the_masked_ops(device):
    V, mask = 300, 299
    logits = _row(V, seed=5).float().expand(4, 50, V).contiguous().to(device)
    x_t = torch.full((4, 50), mask, device=device)
    probs, keep = filtered_probs(logits[0, 0].cpu(), top_k=20, top_p=0.7, exclude=[mask])
    x_s = ops.sample_masked(logits, x_t, mask, 1.0, seed=1, top_k=20, top_p=0.7).cpu()
    x0, log_q = ops.sample_candidates(logits, x_t, mask, 50, seed=2, top_k=20, top_p=0.7)
    x0 = x0.cpu()
    assert keep[x_s].all() and keep[x0].all()
    counts = np.bincount(x0.ravel().numpy(), minlength=V)
    assert chi_square_pvalue(counts, probs.numpy())[0] > P_4SE
    assert torch.allclose(log_q.cpu(), probs.log()[x0].sum(-1), rtol=1e-9)


@pytest.mark.parametrize("case", [{}] + CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()) or "none")
def test_scores_are_those_of_the_filtered_distribution(device, case):
    V, mask = 3000, 2999
    logits = torch.stack([_row(V, seed=s) for s in range(6)]).float().reshape(2, 3, V)
    x_t = torch.full((2, 3), mask)
    x_t[0, 1] = 5  # not masked: copied, not read
    for temperature in (1.0, 0.5, 0.0):
        tokens, scores, argmax = ops.sample_scored(logits.to(device), x_t.to(device), mask, seed=4,
                                                   temperature=temperature, **case)
        tokens, scores, argmax = tokens.cpu(), scores.cpu(), argmax.cpu()
        assert torch.equal(argmax, torch.where(x_t == mask, logits[..., :mask].argmax(-1), x_t))
        assert tokens[0, 1] == 5 and scores[:, 0, 1].tolist() == [0.0, 0.0, 0.0, float("inf")]
        for b, l in [(0, 0), (0, 2), (1, 0), (1, 1), (1, 2)]:
            probs, keep = filtered_probs(logits[b, l], temperature, exclude=[mask], **case)
            top = probs.topk(2).values
            entropy = -(probs[keep] * probs[keep].log()).sum()
            tok = int(tokens[b, l])
            assert keep[tok]
            if temperature == 0.0:
                assert tok == int(logits[b, l, :mask].argmax())
            want = torch.stack([probs[tok], top[0], top[1], entropy])
            assert torch.allclose(scores[:, b, l], want, rtol=1e-9, atol=1e-12), (b, l, scores[:, b, l], want)


def test_sample_scored_draws_what_categorical_draws(device):
    V, mask = 700, 0
    logits = torch.stack([_row(V, seed=s) for s in range(8)]).float().reshape(2, 4, V).to(device)
    x_t = torch.full((2, 4), mask, device=device)
    tokens, _, _ = ops.sample_scored(logits, x_t, mask, seed=9, offset=3, top_k=30, row_offset=8)
    cat, _ = ops.categorical(logits.reshape(8, V), 1, seed=9, offset=3, exclude=[mask], top_k=30, row_offset=8)
    assert torch.equal(tokens.reshape(-1), cat[:, 0])


def test_scored_rows_with_nan_or_nothing_drawable_are_errors(device):
    logits = torch.zeros(1, 3, 10, device=device)
    logits[0, 2, 4] = float("nan")
    with pytest.raises(ValueError, match=r"logits\[0, 2\] contains NaN"):
        ops.sample_scored(logits, torch.full((1, 3), 9, device=device), 9, seed=0, top_k=3)
    x_t = torch.full((1, 3), 9, device=device)
    x_t[0, 2] = 1  # the NaN row is not read
    ops.sample_scored(logits, x_t, 9, seed=0, top_p=0.5)
