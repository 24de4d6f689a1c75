"""Tests of the fused rescoring ops: token_logprob, sequence_logprob, lm_head_logprob."""

import pytest
import torch

from edlm_engine import ops


def _ref(logits, targets, weights=None):
    lp = torch.log_softmax(logits.double(), -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    if weights is not None:
        lp = lp * weights.double()
    return lp.sum(-1)


@pytest.mark.parametrize("V", [7, 50257, 151936])
def test_float32_relative_error_against_float64(device, V):
    g = torch.Generator().manual_seed(V)
    N, L = (4, 16) if V > 1000 else (32, 64)
    logits = (torch.randn(N, L, V, generator=g) * 4).to(device)
    targets = torch.randint(0, V, (N, L), generator=g).to(device)
    out = ops.sequence_logprob(logits, targets)
    ref = _ref(logits.cpu(), targets.cpu())
    assert out.dtype == torch.float64 and out.shape == (N,)
    rel = ((out.cpu() - ref).abs() / ref.abs()).max().item()
    assert rel <= 1e-6, rel


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("V", [7, 50257])
def test_low_precision_error_at_most_twice_pytorch_own(device, dtype, V):
    g = torch.Generator().manual_seed(1)
    N, L = 16, 32
    logits = (torch.randn(N, L, V, generator=g) * 3).to(dtype).to(device)
    targets = torch.randint(0, V, (N, L), generator=g).to(device)
    ref = _ref(logits.cpu(), targets.cpu())  # float64 on the same rounded inputs
    ours = ops.sequence_logprob(logits, targets).cpu()
    theirs = torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1).sum(-1).cpu().double()
    err_ours = (ours - ref).abs().max().item()
    err_theirs = (theirs - ref).abs().max().item()
    assert err_ours <= 2 * err_theirs, (err_ours, err_theirs)


def test_weights_bool_float_and_skipped_rows(device):
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 10, 50, generator=g).to(device)
    targets = torch.randint(0, 50, (3, 10), generator=g).to(device)
    wb = torch.rand(3, 10, generator=g).to(device) > 0.5
    wf = torch.rand(3, 10, generator=g, dtype=torch.float64).to(device)
    for w in (wb, wf, wf.float()):
        assert torch.allclose(ops.sequence_logprob(logits, targets, w).cpu(), _ref(logits.cpu(), targets.cpu(), w.cpu()),
                              rtol=1e-6)
    # weight-0 rows are never read: NaN logits and padding targets there are fine
    logits2, targets2 = logits.clone(), targets.clone()
    logits2[~wb] = float("nan")
    targets2[~wb] = -100
    assert torch.allclose(ops.sequence_logprob(logits2, targets2, wb).cpu(), _ref(logits.cpu(), targets.cpu(), wb.cpu()),
                          rtol=1e-6)


def test_shifted_view_is_read_in_place(device):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 9, 30, generator=g).to(device)
    x = torch.randint(0, 30, (2, 9), generator=g).to(device)
    out = ops.sequence_logprob(logits[:, :-1], x[:, 1:])
    assert torch.allclose(out.cpu(), _ref(logits[:, :-1].cpu(), x[:, 1:].cpu()), rtol=1e-6)


def test_token_logprob_matches_rows(device):
    logits = torch.randn(12, 40).to(device)
    t = torch.randint(0, 40, (12,)).to(device)
    ref = torch.log_softmax(logits.double().cpu(), -1).gather(-1, t.cpu()[:, None]).squeeze(1)
    assert torch.allclose(ops.token_logprob(logits, t).cpu(), ref, rtol=1e-6)


def test_deterministic(device):
    logits = torch.randn(4, 64, 3000).to(device)
    t = torch.randint(0, 3000, (4, 64)).to(device)
    assert torch.equal(ops.sequence_logprob(logits, t), ops.sequence_logprob(logits, t))


@pytest.mark.parametrize("chunk_rows", [None, 1, 7, 16, 48, 1000])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("with_weights", [False, True])
def test_lm_head_logprob_equals_sequence_logprob_of_the_logits(device, chunk_rows, with_bias, with_weights):
    g = torch.Generator().manual_seed(4)
    N, L, H, V = 3, 16, 24, 301  # N * L = 48: 1, 16 and 48 divide it, 7 and 1000 do not
    hidden = torch.randn(N, L, H, generator=g).to(device)
    W = (torch.randn(V, H, generator=g) / H**0.5).to(device)
    b = torch.randn(V, generator=g).to(device) if with_bias else None
    t = torch.randint(0, V, (N, L), generator=g).to(device)
    w = (torch.rand(N, L, generator=g) > 0.3).to(device) if with_weights else None
    logits = hidden @ W.T + (b if b is not None else 0)
    ref = ops.sequence_logprob(logits, t, w)
    out = ops.lm_head_logprob(hidden, W, t, w, bias=b, chunk_rows=chunk_rows)
    assert torch.allclose(out, ref, rtol=1e-5, atol=0)


def test_lm_head_low_precision(device):
    g = torch.Generator().manual_seed(5)
    hidden = torch.randn(2, 8, 32, generator=g).bfloat16().to(device)
    W = torch.randn(500, 32, generator=g).bfloat16().to(device)
    t = torch.randint(0, 500, (2, 8), generator=g).to(device)
    out = ops.lm_head_logprob(hidden, W, t, chunk_rows=5)
    ref = ops.sequence_logprob(torch.nn.functional.linear(hidden, W), t)
    assert torch.allclose(out, ref, rtol=1e-5)


def test_bad_input_is_a_clear_error():
    logits = torch.randn(2, 3, 10)
    t = torch.randint(0, 10, (2, 3))
    bad_t = t.clone()
    bad_t[1, 2] = 10
    with pytest.raises(ValueError, match=r"logits\[1, 2\] has a target outside"):
        ops.sequence_logprob(logits, bad_t)
    nan = logits.clone()
    nan[0, 1, 4] = float("nan")
    with pytest.raises(ValueError, match=r"logits\[0, 1\] contains NaN"):
        ops.sequence_logprob(nan, t)
    ninf = logits.clone()
    ninf[1, 0] = float("-inf")
    with pytest.raises(ValueError, match=r"logits\[1, 0\] has no finite logit"):
        ops.sequence_logprob(ninf, t)
    with pytest.raises(ValueError, match="targets must have shape"):
        ops.sequence_logprob(logits, t[:, :2])
    with pytest.raises(ValueError, match="same device"):
        ops.sequence_logprob(logits, t.to("meta"))
    with pytest.raises(TypeError, match="targets must be an int64"):
        ops.sequence_logprob(logits, t.int())
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        ops.sequence_logprob(logits.double(), t)
    with pytest.raises(ValueError, match="weights must have shape"):
        ops.sequence_logprob(logits, t, torch.ones(3, 2))
    with pytest.raises(ValueError, match="same H"):
        ops.lm_head_logprob(torch.randn(2, 3, 4), torch.randn(10, 5), t)
    with pytest.raises(ValueError, match="chunk_rows"):
        ops.lm_head_logprob(torch.randn(2, 3, 4), torch.randn(10, 4), t, chunk_rows=0)
    with pytest.raises(ValueError, match="target outside"):
        ops.lm_head_logprob(torch.randn(2, 3, 4), torch.randn(10, 4), bad_t)
    with pytest.raises(ValueError, match="targets must have shape"):
        torch.ops.edlm_engine.sequence_logprob(logits, t[:1], None)


def test_opcheck(device):
    logits = torch.randn(2, 5, 33).to(device)
    t = torch.randint(0, 33, (2, 5)).to(device)
    w = torch.rand(2, 5).to(device)
    torch.library.opcheck(torch.ops.edlm_engine.sequence_logprob.default, (logits, t, w))
    torch.library.opcheck(torch.ops.edlm_engine.sequence_logprob.default, (logits, t, None))
    torch.library.opcheck(torch.ops.edlm_engine.token_logprob.default, (logits[0], t[0], None))
