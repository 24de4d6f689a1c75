"""End-to-end EDLM sampling on a GPU: edlm_engine.sample against the plain-PyTorch reference re-implementation.

Setting of the GPU issue: GPT-2-small-shaped random models (12 layers, width 768, vocabulary 50258) as the
bidirectional denoiser (BERT layout, mask id 50257) and as the energy (GPT-2), bfloat16; n = 16, L = 1024,
steps = 256, k = 2, window (0.8, 1.0).  Both providers run in this one process, each once to warm up (8 steps)
and once timed; peak memory is torch.cuda.max_memory_allocated above what was resident before the call.  Also
measured: one masked step of ours against a float64 Gumbel-max step over the same logits (the LLaDA-style
exact fix), and the host syncs per step of ours (torch.cuda.set_sync_debug_mode).

    python benchmarks/e2e_gpu.py [--steps 256] [--n 16] [--seq-len 1024] [--json out.json]
    python benchmarks/e2e_gpu.py --device cpu --layers 1 --width 64 --n 2 --seq-len 32 --steps 8   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from harness import peak_extra_mb, sync  # noqa: E402
from reference_sampler import reference_sample  # noqa: E402

VOCAB, MASK, BOS = 50258, 50257, 50256


def build_models(a):
    from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    heads = max(1, a.width // 64)
    bert = BertForMaskedLM(BertConfig(vocab_size=VOCAB, hidden_size=a.width, num_hidden_layers=a.layers,
                                      num_attention_heads=heads, intermediate_size=4 * a.width,
                                      max_position_embeddings=a.seq_len))
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=a.width, n_layer=a.layers, n_head=heads,
                                      n_positions=a.seq_len + 1, bos_token_id=BOS, eos_token_id=BOS))
    dtype = torch.bfloat16 if a.device.startswith("cuda") else torch.float32
    return [m.to(a.device, dtype).eval() for m in (bert, gpt2)]


def timed(fn, device):
    """Seconds of one call, then the peak extra memory of another (measuring the peak costs time of its own)."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    seconds = time.perf_counter() - t0
    return seconds, peak_extra_mb(fn, device)[0]


def run_ours(bert, gpt2, a, steps):
    import edlm_engine

    return edlm_engine.sample(bert, gpt2, n=a.n, seq_len=a.seq_len, steps=steps, is_size=2, is_window=(0.8, 1.0),
                              mask_id=MASK, seed=0, device=a.device)


def run_reference(bert, gpt2, a, steps):
    with torch.no_grad():
        return reference_sample(lambda x, sigma: bert(input_ids=x).logits, MASK, a.n, a.seq_len, steps,
                                energy_model=gpt2, is_size=2, is_window=(0.8, 1.0), bos_id=BOS, device=a.device,
                                generator=torch.Generator(device=a.device).manual_seed(0))


def sampling_step_times(a):
    """One masked step over [n, L, V] bf16 logits: ours against a float64 Gumbel-max of the whole tensor."""
    from edlm_engine import ops

    logits = torch.randn(a.n, a.seq_len, VOCAB, device=a.device, dtype=torch.bfloat16)
    x_t = torch.full((a.n, a.seq_len), MASK, device=a.device)
    p = 1.0 / a.steps

    def fp64_gumbel():
        q = torch.softmax(logits.double(), -1) * p
        q[..., MASK] = 1 - p
        u = torch.rand(q.shape, device=a.device, dtype=torch.float64)
        return (q / -torch.log(u)).argmax(-1)

    out = {}
    for name, fn in (("ours", lambda: ops.sample_masked(logits, x_t, MASK, p, seed=0)), ("fp64_gumbel", fp64_gumbel)):
        fn()
        out[name] = min(timed(fn, a.device)[0] for _ in range(3))
    return out


def syncs_per_step(bert, gpt2, a, steps=16):
    if not a.device.startswith("cuda"):
        return None  # sync debug mode is CUDA's
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            run_ours(bert, gpt2, a, steps)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in seen) / steps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--steps", type=int, default=256)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--device", default="cuda")
    p.add_argument("--json")
    a = p.parse_args(argv)
    bert, gpt2 = build_models(a)
    res = {"device": torch.cuda.get_device_name() if a.device.startswith("cuda") else a.device, "setting": vars(a)}
    for name, fn in (("ours", run_ours), ("reference", run_reference)):
        fn(bert, gpt2, a, 8)
        seconds, peak = timed(lambda: fn(bert, gpt2, a, a.steps), a.device)
        res[name] = dict(seconds=seconds, peak_mb=peak)
        print(f"{name:<10} {seconds:8.2f} s  peak {peak:9.0f} MiB", flush=True)
    res["speedup"] = res["reference"]["seconds"] / res["ours"]["seconds"]
    res["memory_ratio"] = res["ours"]["peak_mb"] / res["reference"]["peak_mb"]
    print(f"speed-up {res['speedup']:.2f}x (bar 2x), peak memory ours/reference {res['memory_ratio']:.2f} (bar 0.33)")
    res["step"] = sampling_step_times(a)
    ratio = res["step"]["fp64_gumbel"] / res["step"]["ours"]
    print(f"one masked step: ours {1e3 * res['step']['ours']:.2f} ms, float64 Gumbel-max "
          f"{1e3 * res['step']['fp64_gumbel']:.2f} ms: {ratio:.1f}x (bar 5x)")
    res["host_syncs_per_step"] = syncs_per_step(bert, gpt2, a)
    if res["host_syncs_per_step"] is not None:
        print(f"host syncs per step (ours, 16 steps): {res['host_syncs_per_step']:.1f}")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
