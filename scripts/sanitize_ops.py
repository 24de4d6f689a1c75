"""One small CUDA call of every op, each sampling mode once, for `compute-sanitizer --tool memcheck`.

    compute-sanitizer --tool memcheck --error-exitcode 9 python scripts/sanitize_ops.py

Shapes are small (the sanitizer slows kernels a hundredfold) but cross the kernels' edges: a vocabulary that is
not a multiple of the 1024-entry tile, rows that stay masked, an excluded id at both ends, an empty batch.
"""

import torch

from edlm_engine import ops


def main() -> None:
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(0)
    B, L, V, k = 2, 5, 1500, 3
    logits = torch.randn(B, L, V, device=dev, generator=g).to(torch.bfloat16)
    x_t = torch.full((B, L), V - 1, device=dev)
    x_t[:, ::2] = 7
    p = torch.tensor([0.5, 1.0], dtype=torch.float64, device=dev)
    for precision in ("fp64", "fp32-gumbel"):
        for temperature in (1.0, 0.0):
            kw = dict(seed=1, temperature=temperature, precision=precision)
            ops.categorical(logits[0], k, exclude=[0, V - 1, 0], **kw)
            ops.sample_masked(logits, x_t, V - 1, p, **kw)
            ops.sample_candidates(logits, x_t, V - 1, k, **kw)
    for temperature in (1.0, 0.0):
        ops.sample_scored(logits, x_t, V - 1, seed=1, temperature=temperature)
        ops.sample_scored(logits, x_t, V - 1, seed=1, temperature=temperature, top_k=5, top_p=0.9, min_p=0.01)
        ops.categorical(logits[0], k, seed=1, temperature=temperature, top_p=0.5)
    ops.sample_candidates(logits[:, :0], x_t[:, :0], V - 1, k, seed=1)
    ops.importance_resample(torch.randn(B, k, device=dev), seed=1)
    ops.uniform((B, L), seed=1, device=dev)
    drafts = torch.randint(0, V - 1, (B * k, L - 1), device=dev, generator=g)
    ar = torch.randn(B * k, L, V + 7, device=dev, generator=g).to(torch.bfloat16)
    n_valid = torch.tensor([L, 0, 2, L, 1, 3][: B * k], device=dev)
    for w in (0.0, 0.6, 1.0):
        ops.speculative_verify(logits, ar, drafts, n_valid, poe_weight=w, temperature=0.9, mask_id=V - 1, seed=1)
    targets = torch.randint(0, V, (B, L), device=dev, generator=g)
    ops.token_logprob(logits.reshape(-1, V), targets.reshape(-1))
    ops.sequence_logprob(logits, targets, weights=(x_t == V - 1))
    hidden = torch.randn(B, L, 64, device=dev, generator=g).to(torch.bfloat16)
    weight = torch.randn(V, 64, device=dev, generator=g).to(torch.bfloat16)
    ops.lm_head_logprob(hidden, weight, targets, chunk_rows=3)
    torch.cuda.synchronize()
    print("sanitize_ops: every op ran")


if __name__ == "__main__":
    main()
