"""Command line of edlm-engine.

``edlm-engine demo`` (also ``python -m edlm_engine demo``) compares plain masked diffusion and EDLM on the
built-in oracle language and shows the tail the float32 reference sampler loses; ``edlm-engine info`` prints
what the build contains.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import fields

import torch

from . import ops
from .config import GROUPS, SampleConfig


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
    runs += [("ancestral", T, "-", dict()) for T in args.steps]
    runs += [("EDLM", T, k, dict(energy=lang.energy(), is_size=k, is_window=(0.0, 1.0)))
             for T in args.steps if T <= max(args.steps) // 2]
    runs += [("LLaDA-style", T, "-", dict(unmasking="confidence")) for T in args.steps]
    runs += [("speculative", None, "-", dict(sampler="speculative", energy=lang.ar_energy()))]
    rows = []
    header = f"{'sampler':<15}{'steps':>6}{'k':>4}{'pair-TV':>9}{'gen NLL/token':>18}{'entropy (bits)':>16}{'seconds':>9}"
    print(header)
    print("-" * len(header))
    for name, T, kk, kw in runs:
        t0 = time.perf_counter()
        if kw is None:
            tokens = lang.sample(n, L, seed=args.seed + 1)
        else:
            out = sample(lang.denoiser(), n=n, seq_len=L, steps=T or 1, seed=args.seed, **kw)
            tokens = out.tokens
            T = T or f"{out.stats['steps_per_sequence']:.1f}"  # the speculative sampler takes its own steps
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
    print("LLaDA-style: the most confident positions commit first (LLaDA's low-confidence remasking), a heuristic:")
    print("low NLL, less diverse (see its entropy), not the language's distribution (benchmarks/quality/")
    print("instruct_results.md measures it given a prompt).")
    print("speculative: the denoiser drafts 8 tokens, the language's AR conditionals verify them (PoE-Bridge, exact);")
    print("its steps are the rounds a sequence took (benchmarks/quality/speculative_results.md).")
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
    for name, marker in (("ancestral", "o"), ("EDLM", "s"), ("LLaDA-style", "^")):
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


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--field-name`` flag per SampleConfig field, grouped by role, with the config's default and help."""
    groups = {g: parser.add_argument_group(f"{g} options") for g in GROUPS}
    for f in fields(SampleConfig):
        spec = dict(f.metadata["cli"])
        shown = "none" if f.default is None else " ".join(map(str, f.default)) if isinstance(f.default, tuple) \
            else f.default
        text = f.metadata["help"]
        kw = dict(default=f.default, help=text if "default:" in text else f"{text} (default: {shown})")
        if spec.get("type") is bool:
            spec = dict(action=argparse.BooleanOptionalAction)
        groups[f.metadata["group"]].add_argument("--" + f.name.replace("_", "-"), **spec, **kw)


def config_from_args(args: argparse.Namespace, **changes) -> SampleConfig:
    """The SampleConfig the flags describe (with ``changes``); a bad value is a CliError naming the flag."""
    values = {f.name: getattr(args, f.name) for f in fields(SampleConfig)}
    values.update(changes)
    try:
        return SampleConfig(**values)
    except ValueError as e:
        raise CliError(re.sub(r"SampleConfig\.(\w+)", lambda m: "--" + m.group(1).replace("_", "-"), str(e))) from None


def _load_models(args, cfg: SampleConfig):
    """The denoiser and energy of --model / --energy, loaded once for every batch; and a decoder of tokens."""
    from .models import local_path_or_hub_name
    from .sampler import resolve_models

    if args.energy == "oracle" and args.model != "oracle":
        raise CliError("--energy oracle goes with --model oracle")
    model, energy, decode = args.model, args.energy, None
    if args.model == "oracle":
        from .oracle import HMMLanguage

        lang = HMMLanguage.english()
        model, decode = lang.denoiser(), lang.decode
        energy = lang.ar_energy() if args.energy == "oracle" else energy  # exact for EDLM; speculative verifies with it
    for flag, name in (("--model", model), ("--energy", energy)):
        if isinstance(name, str):
            try:
                local_path_or_hub_name(name, flag)
            except FileNotFoundError as e:
                raise CliError(str(e)) from None
    device = torch.device(cfg.device or "cpu")
    denoiser, energy, _ = resolve_models(model, energy, cfg, device)
    if decode is None and denoiser.tokenizer is not None:
        decode = lambda t: denoiser.tokenizer.batch_decode(t.cpu())  # noqa: E731
    return denoiser, energy, decode


def _read_done(path: str, record: dict) -> set:
    """Indices already in the file; a truncated last line (a crash mid-write) is cut off.  Rows written with
    another model, energy or sample-determining option are refused."""
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
        if _identity(row) != _identity(record):
            raise CliError(f"{path} was written with other settings ({_identity(row)}); "
                           "resume with the same options or write to another file")
        done.add(int(row["index"]))
    return done


def _identity(row: dict) -> dict:
    """What decides the tokens of a row: the models and the options that change samples."""
    try:
        settings = SampleConfig.from_dict(row.get("settings") or {}).sample_settings()
    except (TypeError, ValueError):
        settings = row.get("settings")
    return dict(model=row.get("model"), energy=row.get("energy"), settings=settings)


def _check_out(path: str, resume: bool) -> bool:
    """Whether ``path`` exists, after checking that it may be written (nothing is created here)."""
    import os

    exists = os.path.exists(path)
    if exists and not resume:
        raise CliError(f"{path} exists: pass --resume to continue it, or choose another --out")
    parent = os.path.dirname(os.path.abspath(path))
    if not (os.access(path, os.W_OK) if exists else os.path.isdir(parent) and os.access(parent, os.W_OK)):
        raise CliError(f"cannot write --out {path}: no such directory or no write permission")
    return exists


def read_prompts(path: str) -> list:
    """The prompts of a file: one per line as text, or JSONL lines holding a string, token ids or {"prompt": ...}."""
    import json

    try:
        lines = [line.rstrip("\n") for line in open(path, encoding="utf-8") if line.strip()]
    except OSError as e:
        raise CliError(f"--prompt-file {path}: {e.strerror or e}") from None
    if not lines:
        raise CliError(f"--prompt-file {path} holds no prompt")
    prompts = []
    for line in lines:
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            item = line  # plain text
        prompts.append(item.get("prompt") if isinstance(item, dict) else item if isinstance(item, (str, list)) else line)
    if any(p is None for p in prompts):
        raise CliError(f"--prompt-file {path}: a JSON object without a 'prompt' field")
    if len({isinstance(p, str) for p in prompts}) > 1:
        raise CliError(f"--prompt-file {path} mixes texts and token ids")
    return prompts


def _write_rows(f, out, first, decode, record) -> None:
    import json
    import os

    count = out.tokens.shape[0]
    texts = out.text or (decode(out.tokens) if decode is not None else [None] * count)
    for r in range(count):
        f.write(json.dumps(dict(index=first + r, tokens=out.tokens[r].tolist(), text=texts[r],
                                seed=record["settings"]["seed"], **record)) + "\n")
    f.flush()
    os.fsync(f.fileno())  # a crash loses at most the batch in flight


def _runs(todo, batch):
    """Contiguous runs of missing indices, each at most one batch long: (first index, count)."""
    i = 0
    while i < len(todo):
        j = i + 1
        while j < len(todo) and j - i < batch and todo[j] == todo[j - 1] + 1:
            j += 1
        yield todo[i], j - i
        i = j


def sample_cmd(args: argparse.Namespace) -> int:
    from .sampler import sample

    if args.n < 1:
        raise CliError(f"-n must be >= 1, got {args.n}")
    changes = {}
    if args.prompt_file:
        if args.prompt is not None:
            raise CliError("give prompts with --prompt or with --prompt-file, not both")
        changes["prompt"] = read_prompts(args.prompt_file)
    cfg = config_from_args(args, **changes)
    record = dict(model=args.model, energy=args.energy, settings=cfg.to_dict())
    world, rank, cfg = _distributed(cfg)
    # Under torchrun each rank writes its own shard for a contiguous index range; rank 0 merges at the end.
    target = args.out if world == 1 else f"{args.out}.rank{rank}"
    done = set()
    for path in dict.fromkeys([args.out, target]):
        if _check_out(path, args.resume):
            done |= _read_done(path, record)
    base = cfg.first_index  # --first-index shifts the file's indices: sample i is (seed, first_index + i)
    lo, hi = base + rank * args.n // world, base + (rank + 1) * args.n // world
    todo = [i for i in range(lo, hi) if i not in done]
    denoiser, energy, decode = _load_models(args, cfg)  # before --out is created: a failure leaves no file
    from tqdm.auto import tqdm

    bar = tqdm(total=hi - lo, initial=hi - lo - len(todo), disable=args.quiet or rank > 0, unit="sample",
               desc="edlm sample")
    started, made, f = time.perf_counter(), 0, None
    try:
        for first, count in _runs(todo, cfg.batch_size or 16):
            out = sample(denoiser, energy, n=count, config=cfg.replace(first_index=first, batch_size=None))
            f = f or open(target, "a")
            _write_rows(f, out, first, decode, record)
            made += count
            elapsed = time.perf_counter() - started
            bar.set_postfix(samples_per_s=f"{made / elapsed:.1f}",
                            tokens_per_s=f"{made * out.tokens.shape[1] / elapsed:.0f}")
            bar.update(count)
    finally:
        bar.close()
        if f is not None:
            f.close()
    if world > 1:
        _finish_ranks(args.out, world, rank)
    return 0


def _finish_ranks(out: str, world: int, rank: int) -> None:
    import torch.distributed as dist

    dist.barrier()
    if rank == 0:
        _merge(out, [f"{out}.rank{r}" for r in range(world)])
    dist.barrier()
    dist.destroy_process_group()


def _distributed(cfg: SampleConfig):
    """(world size, rank, config): (1, 0, cfg) unless started by torchrun with more than one process; under
    torchrun with a CUDA device, each rank takes the GPU of its local rank."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 1, 0, cfg
    import torch.distributed as dist

    cuda = bool(cfg.device) and cfg.device.startswith("cuda")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        cfg = cfg.replace(device=f"cuda:{local}")
    dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_world_size(), dist.get_rank(), cfg


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
    p_s = sub.add_parser("sample", help="sample to a JSONL file, durably, with --resume",
                         description="Sample to a JSONL file, one object per sample (index, tokens, text, seed, "
                         "model, energy and the settings: SampleConfig.to_dict()), written and fsynced batch by "
                         "batch.  Without --batch-size, batches of 16.")
    p_s.add_argument("--model", required=True, help="denoiser: HuggingFace name or path, or 'oracle'")
    p_s.add_argument("--energy", help="causal LM name or path for EDLM, or 'oracle' (with --model oracle)")
    p_s.add_argument("-n", type=int, required=True, help="number of samples")
    p_s.add_argument("--out", required=True, help="JSONL file, one object per sample")
    p_s.add_argument("--resume", action="store_true", help="skip indices already in --out")
    p_s.add_argument("--quiet", action="store_true", help="no progress bar over the samples")
    p_s.add_argument("--prompt-file", metavar="FILE", help="prompts, one per line, or JSONL (a string, token ids or "
                     "an object with a 'prompt' field per line); sample i takes prompt i modulo their number")
    add_config_flags(p_s)
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
    except KeyboardInterrupt:
        print("edlm-engine: interrupted; what was written is kept (sample: rerun with --resume)", file=sys.stderr)
        return 130
    except CliError as e:
        print(f"edlm-engine: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError) as e:
        print(f"edlm-engine: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
