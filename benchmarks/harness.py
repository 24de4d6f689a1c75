"""Shared inputs, providers, timing and peak-memory measurement for the op benchmarks.

Run as a script, it measures the peak extra memory of one call of one ``sample_candidates`` provider in a
fresh process and prints one JSON line::

    python benchmarks/harness.py --provider ours --shape 4 256 50257 --k 4 [--device cuda]

A fresh process is what makes the CPU number honest: the resident-set high-water mark of a long pytest
session is dominated by whatever ran before, and CPU tensors have no allocator statistics to reset.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Tuple

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import reference  # noqa: E402

MB = 1024 * 1024


def make_logits(shape, device="cpu", mask_id=None, seed=0) -> torch.Tensor:
    """Standard-normal float32 logits, the same on every device; column ``mask_id`` set to ``-inf``.

    A masked-diffusion denoiser outputs ``-inf`` for the mask token, so every provider sees that input and
    none has to exclude the token itself.
    """
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(*shape, generator=g)
    if mask_id is not None:
        logits[..., mask_id] = float("-inf")
    return logits.to(device)


def candidate_inputs(shape, device="cpu") -> Tuple[torch.Tensor, torch.Tensor, int]:
    """Logits ``[B, L, V]``, an all-masked ``x_t`` and ``mask_id = V - 1``."""
    B, L, V = shape
    mask_id = V - 1
    logits = make_logits(shape, device, mask_id=mask_id)
    x_t = torch.full((B, L), mask_id, dtype=torch.int64, device=device)
    return logits, x_t, mask_id


def _ours_candidates():
    from edlm_engine import ops

    # A fresh Philox offset per call, as a sampler loop would pass.
    offsets = itertools.count()

    def run(logits, x_t, mask_id, k):
        return ops.sample_candidates(logits, x_t, mask_id, k, seed=0, offset=next(offsets))

    return run


CANDIDATE_PROVIDERS: Dict[str, Callable[[], Callable]] = {
    "torch-fp32-gumbel": lambda: lambda logits, x_t, mask_id, k: reference.gumbel_fp32_step(logits, k),
    "torch-fp64-gumbel": lambda: lambda logits, x_t, mask_id, k: reference.gumbel_fp64_step(logits, k),
    "torch-multinomial": lambda: lambda logits, x_t, mask_id, k: reference.multinomial_step(logits, k),
    "ours": _ours_candidates,
}
"""Name -> factory of ``fn(logits, x_t, mask_id, k)`` drawing ``k`` candidates for every position."""


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable, device) -> Callable:
    """``fn`` followed by a device synchronization, so that a timer around it sees the kernel time."""
    if torch.device(device).type != "cuda":
        return fn

    def run():
        out = fn()
        torch.cuda.synchronize()
        return out

    return run


def measure_provider(fn: Callable, device, repeats: int = 1) -> dict:
    """A fresh process's figures of one provider: a warm-up call, the best of ``repeats`` synchronized timings, then
    the peak extra memory of one more call (measured apart: resetting the high-water mark costs time)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    peak, method = peak_extra_mb(fn, device)
    return dict(seconds=best, peak_mb=peak, method=method)


def best_of_interleaved(fns: Dict[str, Callable], device, repeats: int = 3) -> Dict[str, float]:
    """Best wall time of each function over ``repeats`` rounds, interleaved so drift hits all alike."""
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak_rss() -> bool:
    # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0).
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _maxrss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / MB if sys.platform == "darwin" else rss / 1024


def peak_extra_mb(fn: Callable, device="cpu") -> Tuple[float, str]:
    """Peak memory above the pre-call level reached during ``fn()`` and how it was measured.

    Returns
    -------
    peak_mb : float
        In MiB (2**20 bytes).
    method : str
    """
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / MB, "torch.cuda.max_memory_allocated"
    if _reset_peak_rss():
        before = _status_kb("VmRSS")
        fn()
        return (_status_kb("VmHWM") - before) / 1024, "VmHWM after clear_refs"
    # No resettable high-water mark: fall back to the process maximum, which a fresh process keeps close
    # to the current RSS until the call.
    before = _maxrss_mb()
    fn()
    return _maxrss_mb() - before, "ru_maxrss"


def measure_candidates_peak(provider: str, shape, k: int, device="cpu") -> dict:
    """Peak extra memory of one ``sample_candidates``-like call, measured in this (fresh) process."""
    logits, x_t, mask_id = candidate_inputs(shape, device)
    fn = CANDIDATE_PROVIDERS[provider]()
    # Pays one-time costs (op registration, OpenMP pool, CUDA context) on a tiny slice, so that the
    # measured call only sees what scales with the input.
    fn(logits[:1, :2], x_t[:1, :2], mask_id, k)
    peak, method = peak_extra_mb(lambda: fn(logits, x_t, mask_id, k), device)
    return {
        "provider": provider,
        "device": str(device),
        "shape": list(shape),
        "k": k,
        "peak_mb": round(peak, 2),
        "logits_mb": round(logits.numel() * 4 / MB, 2),
        "method": method,
    }


def candidates_peak_subprocess(provider: str, shape, k: int, device="cpu", timeout=600) -> dict:
    """Run :func:`measure_candidates_peak` in a fresh Python process and return its result."""
    return fresh_process(Path(__file__).resolve(), "--provider", provider, "--k", str(k), "--device", str(device),
                         "--shape", *map(str, shape), timeout=timeout)


def fresh_process(script, *args, timeout=900) -> dict:
    """Run a benchmark script in a fresh Python process (an honest CPU peak memory) and return the JSON object of
    its last output line."""
    cmd = [sys.executable, str(script), *args]
    env = dict(os.environ)
    # Import edlm_engine from the same checkout as the parent, not whatever is installed.
    import edlm_engine

    pkg_root = str(Path(edlm_engine.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, str(HERE), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(script).name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def provider_parser(description: str, providers, device: bool = True) -> argparse.ArgumentParser:
    """The command line of a benchmark script that runs one provider per fresh process: --provider (--device)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--provider", choices=sorted(providers), required=True)
    if device:
        ap.add_argument("--device", default="cpu")
    return ap


def main(argv=None) -> None:
    ap = provider_parser("Peak extra memory of one sample_candidates provider call.", CANDIDATE_PROVIDERS)
    ap.add_argument("--shape", type=int, nargs=3, default=[4, 256, 50257], metavar=("B", "L", "V"))
    ap.add_argument("--k", type=int, default=4)
    args = ap.parse_args(argv)
    print(json.dumps(measure_candidates_peak(args.provider, tuple(args.shape), args.k, args.device)))


if __name__ == "__main__":
    main()
