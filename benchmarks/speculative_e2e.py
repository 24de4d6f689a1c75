"""Speculative decoding end to end with HuggingFace models: the AR model's cache and the memory beyond the models.

The end-to-end benchmark's model layout (a bidirectional BERT-layout denoiser and a GPT-2-shaped causal LM,
vocabulary 50258, random weights; smaller depth and width by default so it runs on a CPU).  For each sequence
length L and particle count K: seconds, peak memory above what was resident before the call (VmHWM on Linux, or
torch.cuda.max_memory_allocated), and what the AR model was fed: a counter on its forward pass checks that after
the prompt's one encoding every call reads only the K windows of W + 1 tokens (no re-encoding of the prefix).
The same run with the AR model given as a plain callable (whole rows each round, the uncached path) shows what
the cache saves.  Peak memory should grow with K (the windows' logits) and not with L beyond the models' own
(the denoiser's [B, L, V] logits and the cache).

    python benchmarks/speculative_e2e.py [--layers 2] [--width 256] [--n 2] [--seq-lens 64 192] [--particles 1 4 16]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from e2e_gpu import BOS, MASK, build_models  # noqa: E402
from harness import peak_extra_mb, sync  # noqa: E402


def count_calls(gpt2):
    """Record the input length of every forward call of the causal LM's base model."""
    calls = []
    forward = gpt2.transformer.forward

    def recorded(*args, **kwargs):
        ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        calls.append(tuple(ids.shape))
        return forward(*args, **kwargs)

    gpt2.transformer.forward = recorded
    return calls


def uncached(gpt2):
    """The same model as a plain callable: aligned log-probabilities of whole rows, read again each round."""
    import edlm_engine

    def fn(x):
        ids = torch.cat([torch.full_like(x[:, :1], BOS), x], 1)
        return torch.log_softmax(gpt2(input_ids=ids).logits[:, :-1].float(), -1)

    return edlm_engine.AREnergy(fn, vocab_size=gpt2.config.vocab_size)


def run(bert, energy, a, L, K):
    import edlm_engine

    kw = dict(n=a.n, seq_len=L, sampler="speculative", particles=K, poe_weight=0.5, verify_window=a.window,
              mask_id=MASK, seed=0, device=a.device)
    sync(a.device)
    t0 = time.perf_counter()
    out = edlm_engine.sample(bert, energy, **kw)
    sync(a.device)
    seconds = time.perf_counter() - t0
    peak, method = peak_extra_mb(lambda: edlm_engine.sample(bert, energy, **kw), a.device)
    return out.stats, seconds, peak, method


def main(argv=None):
    if sys.platform.startswith("linux") and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        # glibc otherwise keeps freed large blocks, so a second call's high-water mark would show nothing
        os.execve(sys.executable, [sys.executable, *sys.argv], dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536"))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--n", type=int, default=2)
    p.add_argument("--window", type=int, default=8)
    p.add_argument("--seq-lens", type=int, nargs="+", default=[64, 192])
    p.add_argument("--particles", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--device", default="cpu")
    p.add_argument("--json")
    a = p.parse_args(argv)
    a.seq_len = max(a.seq_lens)
    bert, gpt2 = build_models(a)
    calls = count_calls(gpt2)
    rows = []
    for L in a.seq_lens:
        for K in a.particles:
            calls.clear()
            stats, seconds, peak, method = run(bert, gpt2, a, L, K)
            windows = set(calls[1 : len(calls) // 2])  # the first of the two runs: the prompt's call, then windows
            row = dict(seq_len=L, particles=K, path="KV cache", seconds=round(seconds, 2), peak_extra_mb=round(peak, 1),
                       ar_calls_per_sequence=stats["ar_calls_per_sequence"],
                       ar_tokens_per_sequence=stats["ar_tokens_per_sequence"],
                       window_calls_only=windows == {(a.n * K, a.window + 1)}, mean_ess=stats["mean_ess"])
            rows.append(row)
            print(row, flush=True)
        stats, seconds, peak, method = run(bert, uncached(gpt2), a, L, a.particles[0])
        rows.append(dict(seq_len=L, particles=a.particles[0], path="whole rows (AREnergy)", seconds=round(seconds, 2),
                         peak_extra_mb=round(peak, 1), ar_calls_per_sequence=stats["ar_calls_per_sequence"],
                         ar_tokens_per_sequence=stats["ar_tokens_per_sequence"]))
        print(rows[-1], flush=True)
    result = dict(setting=dict(vars(a), peak_method=method), rows=rows)
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
