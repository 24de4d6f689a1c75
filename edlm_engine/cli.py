"""Command line of edlm-engine.

``edlm-engine demo`` (also ``python -m edlm_engine demo``) compares plain masked diffusion and EDLM on the
built-in oracle language and shows the tail the float32 reference sampler loses; ``edlm-engine info`` prints
what the build contains.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from . import ops


def _tail_race(seed: int) -> None:
    V = 50257
    p = torch.full((V,), 1e-3 / (V - 1), dtype=torch.float64)
    p[0] = 1 - 1e-3
    logits = p.log().float()[None]
    print(f"Tail race: one token with p = 1 - 1e-3, {V - 1} tokens sharing 1e-3 (float32 logits).")
    print(f"{'precision':<13}{'draws':>10}{'tail draws':>12}{'tail rate':>12}{'exact':>9}{'seconds':>9}")
    for precision, n in (("fp64", 1_000_000), ("fp32-gumbel", 10_000)):
        t0 = time.perf_counter()
        tokens, _ = ops.categorical(logits, n, seed=seed, precision=precision)
        dt = time.perf_counter() - t0
        tail = int((tokens != 0).sum())
        print(f"{precision:<13}{n:>10}{tail:>12}{tail / n:>12.2e}{1e-3:>9.0e}{dt:>9.2f}")
    print("fp32-gumbel (the reference code's sampler) caps the Gumbel noise near 16.6 and loses the tail.\n")


def _quality_table(args: argparse.Namespace):
    """Plain ancestral and EDLM on the English-like oracle language, against exact samples."""
    from .oracle import HMMLanguage, generative_nll, pair_tv, steps_to_reach, unigram_entropy
    from .sampler import sample

    lang = HMMLanguage.english()
    n, L, k = args.n, args.seq_len, args.is_size
    print(f"Oracle language: English-like HMM ({lang.n_states} part-of-speech states, {lang.vocab_size} words); "
          f"n = {n} sequences of {L} tokens.")
    print(f"EDLM: k = {k} candidates, importance sampling at every step, exact log-likelihood energy.\n")
    runs = [("exact samples", "-", "-", None)]
    runs += [("ancestral", T, "-", None) for T in args.steps]
    runs += [("EDLM", T, k, lang.energy()) for T in args.steps if T <= max(args.steps) // 2]
    rows = []
    header = f"{'sampler':<15}{'steps':>6}{'k':>4}{'pair-TV':>9}{'gen NLL/token':>18}{'entropy (bits)':>16}{'seconds':>9}"
    print(header)
    print("-" * len(header))
    for name, T, kk, energy in runs:
        t0 = time.perf_counter()
        if energy is None and T == "-":
            tokens = lang.sample(n, L, seed=args.seed + 1)
        else:
            tokens = sample(lang.denoiser(), energy, n=n, seq_len=L, steps=T, is_size=k, is_window=(0.0, 1.0),
                            seed=args.seed).tokens
        sec = time.perf_counter() - t0
        tv = pair_tv(tokens, lang)
        nll, se = generative_nll(tokens, lang)
        bits = unigram_entropy(tokens, lang.vocab_size)[1]
        rows.append(dict(sampler=name, steps=T, k=kk, pair_tv=tv, nll=nll, nll_se=se, entropy_bits=bits, seconds=sec,
                         text=lang.decode(tokens[:2])))
        nll_s = f"{nll:.3f} +- {se:.3f}"
        print(f"{name:<15}{str(T):>6}{str(kk):>4}{tv:>9.3f}{nll_s:>18}{bits:>16.2f}{sec:>9.2f}")
    print("\npair-TV: total variation between sampled and exact adjacent-pair distributions (exact samples show the")
    print("sampling-noise floor); gen NLL: -log p(x) / L under the true model (+- one standard error).")
    floor = rows[0]["pair_tv"]
    ancestral = {r["steps"]: r["pair_tv"] - floor for r in rows if r["sampler"] == "ancestral"}
    savings = [f"{steps_to_reach(ancestral, r['pair_tv'] - floor) / r['steps']:.2f}x at {r['steps']}"
               for r in rows if r["sampler"] == "EDLM"]
    if savings:
        print(f"EDLM step saving (ancestral steps that reach EDLM's pair-TV, per EDLM step): {', '.join(savings)}")
        print("steps; sequence-level weights repair little of a grammar this strongly coupled "
              "(benchmarks/quality/saving.md).")
    print()
    for r in rows:
        if r["steps"] in ("-", min(args.steps)):
            label = r["sampler"] + ("" if r["steps"] == "-" else f", {r['steps']} steps")
            print(f"{label}:")
            for line in r["text"]:
                print(f"  {line}")
    print()
    return rows


def _plot(rows, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install matplotlib") from None
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, marker in (("ancestral", "o"), ("EDLM", "s")):
        pts = [(r["steps"], r["pair_tv"]) for r in rows if r["sampler"] == name]
        if pts:
            ax.plot(*zip(*pts), marker=marker, label=name)
    floor = [r["pair_tv"] for r in rows if r["sampler"] == "exact samples"]
    if floor:
        ax.axhline(floor[0], color="gray", linestyle="--", label="exact samples (noise floor)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("denoising steps")
    ax.set_ylabel("adjacent-pair total variation")
    ax.set_title("Quality against steps on the oracle language")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot saved to {path}")


def demo(args: argparse.Namespace) -> int:
    info = ops.build_info()
    print(f"edlm-engine {info['version']}  (CUDA kernels: {info['with_cuda']}, OpenMP threads: {info['max_threads']})\n")
    rows = _quality_table(args)
    if args.plot:
        _plot(rows, args.plot)
    _tail_race(args.seed)
    return 0


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


def _load_models(args):
    from .models import as_denoiser, as_energy

    if args.model == "oracle":
        from .oracle import HMMLanguage

        lang = HMMLanguage.english()
        decode = lang.decode
        model = as_denoiser(lang.denoiser())
    else:
        import os

        if args.model.startswith((".", "/", "~")) and not os.path.exists(os.path.expanduser(args.model)):
            raise CliError(f"--model {args.model}: no such file or directory")
        dtype = getattr(torch, args.dtype) if args.dtype else None
        model = as_denoiser(args.model, mask_id=args.mask_id, device=args.device, dtype=dtype,
                            trust_remote_code=args.trust_remote_code)
        decode = (lambda t: model.tokenizer.batch_decode(t.cpu())) if model.tokenizer is not None else None
    energy = None
    if args.energy == "oracle":
        if args.model != "oracle":
            raise CliError("--energy oracle goes with --model oracle")
        energy = lang.energy()
    elif args.energy:
        dtype = getattr(torch, args.dtype) if args.dtype else None
        energy = as_energy(args.energy, trust_remote_code=args.trust_remote_code, device=args.device, dtype=dtype)
    return model, energy, decode


def _settings(args) -> dict:
    keys = ("model", "energy", "seq_len", "steps", "sampler", "is_size", "is_window", "temperature", "precision",
            "mask_id", "seed")
    return {k: getattr(args, k) for k in keys}


def _read_done(path: str, settings: dict) -> set:
    """Indices already in the file; a truncated last line (a crash mid-write) is cut off."""
    import json
    import os

    done = set()
    with open(path, "rb") as f:
        data = f.read()
    keep = data.rfind(b"\n") + 1
    if keep != len(data):
        with open(path, "r+b") as f:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
    for line in data[:keep].splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("settings") != settings:
            raise CliError(f"{path} was written with other settings ({row.get('settings')}); "
                           "resume with the same options or write to another file")
        done.add(int(row["index"]))
    return done


def sample_cmd(args: argparse.Namespace) -> int:
    import json
    import os

    from .sampler import sample

    for name in ("n", "seq_len", "steps", "is_size", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise CliError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if not (0.0 <= args.is_window[0] <= args.is_window[1] <= 1.0):
        raise CliError(f"--is-window must satisfy 0 <= LO <= HI <= 1, got {args.is_window}")
    settings = _settings(args)
    world, rank = _distributed(args)
    # Under torchrun each rank writes its own shard for a contiguous index range; rank 0 merges at the end.
    target = args.out if world == 1 else f"{args.out}.rank{rank}"
    done = set()
    for path in dict.fromkeys([args.out, target]):
        exists = os.path.exists(path)
        if exists and not args.resume:
            raise CliError(f"{path} exists: pass --resume to continue it, or choose another --out")
        parent = os.path.dirname(os.path.abspath(path))
        if not (os.access(path, os.W_OK) if exists else os.path.isdir(parent) and os.access(parent, os.W_OK)):
            raise CliError(f"cannot write --out {path}: no such directory or no write permission")
        if exists:
            done |= _read_done(path, settings)
    lo, hi = rank * args.n // world, (rank + 1) * args.n // world
    todo = [i for i in range(lo, hi) if i not in done]
    model, energy, decode = _load_models(args)
    batch = args.batch_size or 16
    from tqdm.auto import tqdm

    bar = tqdm(total=hi - lo, initial=hi - lo - len(todo), disable=args.quiet or rank > 0, unit="sample",
               desc="edlm sample")
    started, made = time.perf_counter(), 0
    with open(target, "a") as f:
        i = 0
        while i < len(todo):
            # a contiguous run of missing indices, at most one batch long
            j = i + 1
            while j < len(todo) and j - i < batch and todo[j] == todo[j - 1] + 1:
                j += 1
            first, count = todo[i], j - i
            out = sample(model, energy, n=count, first_index=first, seq_len=args.seq_len, steps=args.steps,
                         sampler=args.sampler, is_size=args.is_size, is_window=tuple(args.is_window),
                         temperature=args.temperature, precision=args.precision, seed=args.seed, device=args.device)
            texts = decode(out.tokens) if decode is not None else [None] * count
            for r in range(count):
                row = dict(index=first + r, tokens=out.tokens[r].tolist(), text=texts[r], seed=args.seed,
                           settings=settings)
                f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())  # a crash loses at most the batch in flight
            made += count
            elapsed = time.perf_counter() - started
            bar.set_postfix(samples_per_s=f"{made / elapsed:.1f}", tokens_per_s=f"{made * args.seq_len / elapsed:.0f}")
            bar.update(count)
            i = j
    bar.close()
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        if rank == 0:
            _merge(args.out, [f"{args.out}.rank{r}" for r in range(world)])
        dist.barrier()
        dist.destroy_process_group()
    return 0


def _distributed(args):
    """(world size, rank): (1, 0) unless started by torchrun with more than one process."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 1, 0
    import torch.distributed as dist

    cuda = bool(args.device) and str(args.device).startswith("cuda")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        args.device = f"cuda:{local}"
    dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_world_size(), dist.get_rank()


def _merge(out: str, shards) -> None:
    """Rows of ``out`` and the shards, each index once, sorted, written atomically; the shards are removed."""
    import json
    import os

    rows = {}
    for path in [out, *shards]:
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    if line.strip():
                        rows.setdefault(int(json.loads(line)["index"]), line if line.endswith("\n") else line + "\n")
    tmp = out + ".merging"
    with open(tmp, "w") as f:
        for index in sorted(rows):
            f.write(rows[index])
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)
    for path in shards:
        if os.path.exists(path):
            os.remove(path)


def bench(args: argparse.Namespace) -> int:
    """Run the benchmark suites of a source checkout with pytest and let them print their tables."""
    import os
    import subprocess

    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
    if not os.path.isdir(root):
        raise CliError(f"no benchmarks/ folder beside the package ({root}): run from a source checkout")
    cmd = [sys.executable, "-m", "pytest", root, "-q", "-s", "-p", "no:cacheprovider"]
    if args.quick:
        cmd += ["-m", "ratio"]
    if args.k:
        cmd += ["-k", args.k]
    return subprocess.call(cmd, cwd=os.path.dirname(root))


def info(args: argparse.Namespace) -> int:
    for key, value in ops.build_info().items():
        print(f"{key}: {value}")
    print(f"torch: {torch.__version__} (cuda available: {torch.cuda.is_available()})")
    return 0


def main(argv=None) -> int:
    """Entry point of the ``edlm-engine`` command."""
    parser = argparse.ArgumentParser(prog="edlm-engine", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="plain vs EDLM sampling on the built-in oracle language (< 60 s on 2 cores)")
    p_demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p_demo.add_argument("-n", type=int, default=256, help="sequences per configuration (default 256)")
    p_demo.add_argument("--seq-len", type=int, default=32, help="tokens per sequence (default 32)")
    p_demo.add_argument("--steps", type=int, nargs="+", default=[2, 4, 8, 16], help="step counts (default 2 4 8 16)")
    p_demo.add_argument("--is-size", type=int, default=8, help="EDLM candidates k (default 8)")
    p_demo.add_argument("--plot", metavar="FILE.png", help="save quality against steps as a PNG (needs matplotlib)")
    p_demo.set_defaults(func=demo)
    p_s = sub.add_parser("sample", help="sample to a JSONL file, durably, with --resume")
    p_s.add_argument("--model", required=True, help="denoiser: HuggingFace name or path, or 'oracle'")
    p_s.add_argument("--energy", help="causal LM name or path for EDLM, or 'oracle' (with --model oracle)")
    p_s.add_argument("-n", type=int, required=True, help="number of samples")
    p_s.add_argument("--seq-len", type=int, required=True)
    p_s.add_argument("--steps", type=int, default=256)
    p_s.add_argument("--sampler", choices=["ancestral", "first_hitting"], default="ancestral")
    p_s.add_argument("--is-size", type=int, default=2)
    p_s.add_argument("--is-window", type=float, nargs=2, default=[0.8, 1.0], metavar=("LO", "HI"))
    p_s.add_argument("--temperature", type=float, default=1.0)
    p_s.add_argument("--precision", choices=list(ops.PRECISIONS), default="fp64")
    p_s.add_argument("--mask-id", type=int)
    p_s.add_argument("--seed", type=int, default=0)
    p_s.add_argument("--batch-size", type=int, help="samples per batch and per write (default 16)")
    p_s.add_argument("--device", help="e.g. cpu or cuda")
    p_s.add_argument("--dtype", choices=["float32", "float16", "bfloat16"])
    p_s.add_argument("--trust-remote-code", action="store_true")
    p_s.add_argument("--out", required=True, help="JSONL file, one object per sample")
    p_s.add_argument("--resume", action="store_true", help="skip indices already in --out")
    p_s.add_argument("--quiet", action="store_true", help="no progress bar")
    p_s.set_defaults(func=sample_cmd)
    p_bench = sub.add_parser("bench", help="run the benchmark suites (source checkout) and print their tables")
    p_bench.add_argument("--quick", action="store_true", help="only the ratio tests (a few minutes)")
    p_bench.add_argument("-k", help="pytest -k expression selecting benchmarks")
    p_bench.set_defaults(func=bench)
    p_info = sub.add_parser("info", help="print what this build contains")
    p_info.set_defaults(func=info)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CliError as e:
        print(f"edlm-engine: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError) as e:
        print(f"edlm-engine: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
