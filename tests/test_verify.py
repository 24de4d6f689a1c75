"""ops.speculative_verify: against a float64 PyTorch reference of the same rule, and statistically against pi.
One test body per device (CUDA runs skip where there is no GPU)."""

import pytest
import torch

from edlm_engine import ops

from .stats import P_4SE, chi_square_pvalue
from .test_filters import filtered_probs


def _case(B, K, W, V, Va, seed, device, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(B, W + 1, V, generator=g) * 2.0
    d[0, 0, : V // 3] = float("-inf")  # tokens the denoiser rules out
    a = torch.randn(B * K, W + 1, Va, generator=g) * 2.0
    drafts = torch.randint(0, V - 1, (B * K, W), generator=g)  # V - 1 is the mask id below
    n_valid = torch.randint(0, W + 2, (B * K,), generator=g)
    n_valid[:2] = W + 1
    return [t.to(device) for t in (d.to(dtype), a.to(dtype), drafts, n_valid)]


def _drafts_from_q(d, K, T, mask_id, filters):
    """Drafts drawn as the sampler draws them: K per window position from the filtered q."""
    B, W1, V = d.shape
    tokens, _ = ops.categorical(d[:, :-1].reshape(-1, V), K, seed=9, temperature=T,
                                exclude=mask_id if mask_id >= 0 else None, **filters)
    return tokens.view(B, W1 - 1, K).transpose(1, 2).reshape(B * K, W1 - 1)


def _reference(d, a, drafts, n_valid, w, T, mask_id, seed, offset, row_offset, filters=None):
    """The rule in float64 PyTorch, row by row (the sampler's first version), the filtered q by sorting."""
    N, W = drafts.shape
    K, V = N // d.shape[0], d.shape[-1]
    dd = d.double().repeat_interleave(K, 0).cpu()
    aa = a.double().cpu()
    q = torch.stack([torch.stack([filtered_probs(row, T, exclude=[mask_id], **(filters or {}))[0] for row in rows])
                     for rows in dd])
    log_q = q.log()
    if mask_id >= 0:
        dd[..., mask_id] = float("-inf")
    log_pa = torch.log_softmax(aa, -1)
    a_v = torch.full_like(dd, float("-inf"))
    a_v[..., : min(V, aa.shape[-1])] = aa[..., :V]
    mixed = a_v if w == 0 else dd if w == 1 else w * dd + (1 - w) * a_v
    if mask_id >= 0:
        mixed[..., mask_id] = float("-inf")
    log_pi = torch.log_softmax(mixed / T, -1)
    u = ops.uniform((N, W + 1), seed=seed, offset=offset, row_offset=row_offset * (W + 1))
    def at(n, j, y):
        pa = log_pa[n, j, y] if y < aa.shape[-1] else torch.tensor(float("-inf"), dtype=torch.float64)
        return torch.stack([log_q[n, j, y], pa, log_pi[n, j, y]])

    out = dict(n_acc=torch.zeros(N, dtype=torch.long), fix=torch.full((N,), -1), logs=torch.zeros(3, N, W + 1, dtype=torch.float64))
    for n in range(N):
        nv, j = min(int(n_valid[n]), W + 1), 0
        while j < min(W, nv):
            y = int(drafts[n, j])
            out["logs"][:, n, j] = at(n, j, y)
            if not torch.log(u[n, j]) < log_pi[n, j, y] - log_q[n, j, y]:
                break
            j += 1
        out["n_acc"][n] = j
        if j >= nv:
            continue
        pi = log_pi[n, j].exp()
        weights = (pi - log_q[n, j].exp()).clamp(min=0) if j < W else torch.zeros_like(pi)
        if not weights.sum() > 0:
            weights = pi
        cum = weights.cumsum(0)
        tok = int(torch.searchsorted(cum, u[n, W] * cum[-1], right=True).clamp(max=V - 1))
        out["fix"][n] = tok
        out["logs"][:, n, j] = at(n, j, tok)
    return out


FILTERS = [{}, dict(top_k=3), dict(top_p=0.7, min_p=0.02)]


@pytest.mark.parametrize("V, Va", [(13, 13), (13, 9), (3000, 3100)])
@pytest.mark.parametrize("w, T", [(0.0, 1.0), (0.7, 1.0), (0.7, 0.6), (1.0, 1.3)])
@pytest.mark.parametrize("filters", FILTERS)
def test_matches_the_float64_reference(device, V, Va, w, T, filters):
    d, a, drafts, n_valid = _case(3, 4, 5, V, Va, seed=V + int(10 * w), device=device)
    drafts = _drafts_from_q(d, 4, T, V - 1, filters)
    kw = dict(poe_weight=w, temperature=T, mask_id=V - 1, seed=7, offset=3, row_offset=11)
    n_acc, fix, *logs = ops.speculative_verify(d, a, drafts, n_valid, **kw, **filters)
    ref = _reference(d, a, drafts, n_valid, w, T, kw["mask_id"], 7, 3, 11, filters)
    assert torch.equal(n_acc.cpu(), ref["n_acc"]) and torch.equal(fix.cpu(), ref["fix"])
    got = torch.stack(logs).cpu()
    finite = torch.isfinite(ref["logs"])
    assert torch.equal(finite, torch.isfinite(got))
    assert torch.allclose(got[finite], ref["logs"][finite].to(got.dtype), rtol=0, atol=1e-9)
    assert (n_acc[n_valid == 0] == 0).all() and (fix[n_valid == 0] == -1).all()  # finished rows are not read


@pytest.mark.parametrize("w, filters", [(0.0, {}), (0.6, {}), (0.0, dict(top_k=3)), (0.6, dict(top_p=0.6))])
def test_the_first_emitted_token_follows_pi_exactly(device, w, filters):
    # Drafts y ~ q (filtered or not): whatever the verification accepts or redraws at position 0 is distributed
    # as pi, which no filter touches.
    V, N = 11, 200_000
    g = torch.Generator().manual_seed(2)
    d = (torch.randn(1, 2, V, generator=g) * 1.5).to(device)
    a = (torch.randn(1, 2, V, generator=g) * 1.5).expand(N, 2, V).contiguous().to(device)
    drafts, _ = ops.categorical(d[0, :1].expand(N, V).contiguous(), 1, seed=1, **filters)
    n_acc, fix, *_ = ops.speculative_verify(d, a, drafts, torch.full((N,), 2, device=device), poe_weight=w, seed=3,
                                            **filters)
    first = torch.where(n_acc > 0, drafts[:, 0], fix).cpu()
    pi = torch.softmax(w * d[0, 0].double().cpu() + (1 - w) * a[0, 0].double().cpu(), -1)
    assert chi_square_pvalue(torch.bincount(first, minlength=V).numpy(), pi.numpy())[0] > P_4SE


def test_errors_name_the_argument_and_the_particle(device):
    d, a, _, n_valid = _case(2, 2, 3, 13, 13, seed=0, device=device)
    a[3, 1, 4] = float("nan")
    n_valid[3] = 4
    d[:, :, 0] = 5.0  # q and pi both favour token 0, so particle 3 tests position 1, whose AR row holds the NaN
    a[:, :, 0] = 5.0
    drafts = torch.zeros(4, 3, dtype=torch.long, device=device)
    with pytest.raises(ValueError, match="particle row 3 contains NaN"):
        ops.speculative_verify(d, a, drafts, n_valid, seed=0)
    bad = drafts.clone()
    d[0, 0, 2] = float("-inf")
    for wrong in (13, 12, 2):  # out of range; the mask id; a -inf logit (particle 1 drafts from sequence 0)
        bad[1, 0] = wrong
        with pytest.raises(ValueError, match=r"drafts\[1\] holds a token its q cannot draw"):
            ops.speculative_verify(d, a.nan_to_num(), bad, n_valid, mask_id=12, seed=0)
    with pytest.raises(ValueError, match="ar_logits must have shape"):
        ops.speculative_verify(d, a[:3], drafts, n_valid, seed=0)
    with pytest.raises(ValueError, match="poe_weight"):
        ops.speculative_verify(d, a, drafts, n_valid, poe_weight=1.5, seed=0)
    with pytest.raises(ValueError, match="temperature"):
        ops.speculative_verify(d, a, drafts, n_valid, temperature=0.0, seed=0)
    with pytest.raises(ValueError, match=r"row_offset \+ particles must be at most 2\^48 / \(W \+ 1\)"):
        ops.speculative_verify(d, a, drafts, n_valid, seed=0, row_offset=2**47)
    empty = ops.speculative_verify(d[:0], a[:0], drafts[:0], n_valid[:0], seed=0)
    assert [tuple(t.shape) for t in empty] == [(0,), (0,), (0, 4), (0, 4), (0, 4)]


def test_opcheck(device):
    d, a, _, n_valid = _case(2, 3, 4, 37, 40, seed=1, device=device)
    for filters, raw in (({}, (0, 1.0, 0.0)), (dict(top_k=5, top_p=0.9, min_p=0.01), (5, 0.9, 0.01))):
        drafts = _drafts_from_q(d, 3, 0.9, 36, filters)
        torch.library.opcheck(torch.ops.edlm_engine.speculative_verify.default,
                              (d, a, drafts, n_valid, 0.5, 0.9, 36, *raw, 1, 2, 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("V", [13, 50257])
def test_cpu_and_cuda_give_identical_tokens(dtype, V):
    case = _case(4, 4, 8, V, V + 3, seed=V, device="cpu", dtype=dtype)
    for w, filters in ((0.0, {}), (0.7, {}), (0.7, dict(top_k=50, top_p=0.9))):
        kw = dict(poe_weight=w, temperature=0.8, mask_id=V - 1, seed=5, offset=1, row_offset=2, **filters)
        case[2] = _drafts_from_q(case[0], 4, 0.8, V - 1, filters)
        cpu = ops.speculative_verify(*case, **kw)
        gpu = ops.speculative_verify(*[t.cuda() for t in case], **kw)
        assert torch.equal(cpu[0], gpu[0].cpu()) and torch.equal(cpu[1], gpu[1].cpu())
        for c, g in zip(cpu[2:], gpu[2:]):
            assert torch.equal(c, g.cpu())
