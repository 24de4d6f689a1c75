"""Quality study of instruct-style decoding on the English-like oracle language, given a prompt.

How far from the exact conditional distribution of the continuation does each unmasking rule land, and how
much diversity (unigram entropy) does confidence ordering give up?  Rules: random (the exact ancestral step),
confidence, margin and entropy with LLaDA's schedule at ``--steps``; the rules with a Fast-dLLM ``threshold`` or
an EB-Sampler ``entropy_bound`` (which decide their own step counts); and the plain-PyTorch copy of LLaDA's
generate (``benchmarks/llada_reference.py``) with its low-confidence and random remasking.  Every configuration
runs ``--replicates`` times with different seeds; figures are means with their standard errors over replicates.
The floor row is exact conditional samples (the sampling noise of the metric at this n).

    python benchmarks/quality/instruct_study.py [--n 512] [--gen-length 32] [--block-length 8] [--replicates 4]
        [--steps 8 16 32 64]

Writes ``instruct_results.json``, ``instruct_results.md`` and ``instruct.png`` beside this file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import edlm_engine  # noqa: E402
from edlm_engine.oracle import HMMLanguage, generative_nll, pair_tv, unigram_entropy  # noqa: E402
from llada_reference import llada_generate  # noqa: E402
from study import mean_se  # noqa: E402

RULES = ("random", "confidence", "margin", "entropy")


def configurations(steps):
    """(label, steps or None, sample() keywords or None for LLaDA's generate, LLaDA remasking)."""
    out = []
    for T in steps:
        out += [(f"unmasking={rule}", T, dict(steps=T, unmasking=rule), None) for rule in RULES]
        out += [(f"LLaDA generate {how}", T, None, how) for how in ("low_confidence", "random")]
    # The language spreads each position over many words (p of a draw is rarely above 0.5, entropies near 3
    # nats), so the thresholds and bounds that change anything here are low and high.
    for rule in RULES[1:]:
        out += [(f"unmasking={rule} threshold={th}", None, dict(unmasking=rule, threshold=th), None) for th in (0.5, 0.1)]
    out += [(f"unmasking=entropy entropy_bound={g}", None, dict(unmasking="entropy", entropy_bound=g), None)
            for g in (1.0, 3.0, 8.0)]
    return out


def run(lang, prompt, args, T, kw, llada_remasking, seed):
    """Generated tokens [n, gen_length] and steps per sequence (one denoiser call each for LLaDA's generate)."""
    if llada_remasking is not None:
        oracle = lang.denoiser()
        calls = []

        def model(x):
            calls.append(1)
            return SimpleNamespace(logits=oracle(x, None))

        out = llada_generate(model, torch.tensor([prompt] * args.n), steps=T, gen_length=args.gen_length,
                             block_length=args.block_length, temperature=1.0, remasking=llada_remasking,
                             mask_id=lang.mask_id, generator=torch.Generator().manual_seed(seed))
        return out[:, len(prompt):], float(len(calls))
    steps = kw.pop("steps", args.gen_length)
    out = edlm_engine.sample(lang.denoiser(), n=args.n, prompt=prompt, gen_length=args.gen_length,
                             block_length=args.block_length, steps=steps, seed=seed, cache=False, **kw)
    return out.tokens[:, len(prompt):], out.stats["steps_per_sequence"]


def study(args):
    lang = HMMLanguage.english()
    prompt = lang.sample(1, args.prompt_length, seed=123)[0].tolist()
    metrics = dict(pair_tv=lambda t: pair_tv(t, lang, prompt), nll=lambda t: generative_nll(t, lang, prompt)[0],
                   entropy_bits=lambda t: unigram_entropy(t, lang.vocab_size)[1])
    print(f"prompt: {lang.decode(torch.tensor([prompt]))[0]!r}; n = {args.n} x {args.replicates} replicates, "
          f"gen_length {args.gen_length}, block_length {args.block_length}")
    floor = [lang.sample(args.n, args.gen_length, seed=1000 + r, prompt=prompt) for r in range(args.replicates)]
    rows = [dict(config="exact conditional samples", steps=None, calls=None,
                 **{k: mean_se([fn(t) for t in floor]) for k, fn in metrics.items()})]
    _print(rows[-1])
    for label, T, kw, llada in configurations(args.steps):
        t0 = time.perf_counter()
        results = [run(lang, prompt, args, T, dict(kw or {}), llada, seed) for seed in range(args.replicates)]
        rows.append(dict(config=label, steps=T, calls=mean_se([c for _, c in results]),
                         seconds=(time.perf_counter() - t0) / args.replicates,
                         **{k: mean_se([fn(t) for t, _ in results]) for k, fn in metrics.items()}))
        _print(rows[-1])
    return dict(setting=vars(args), prompt=prompt, prompt_text=lang.decode(torch.tensor([prompt]))[0], rows=rows)


def _fmt(v):
    return "-" if v is None else f"{v[0]:.3f} +- {v[1]:.3f}" if isinstance(v, (list, tuple)) else str(v)


def _print(row):
    print(f"{row['config']:<44}{str(row['steps']):>6}  steps/seq {_fmt(row['calls']):>16}  pair-TV {_fmt(row['pair_tv'])}"
          f"  NLL {_fmt(row['nll'])}  entropy {_fmt(row['entropy_bits'])} bits", flush=True)


def write(res):
    (HERE / "instruct_results.json").write_text(json.dumps(res, indent=1))
    lines = ["# Instruct decoding on the English-like oracle (`python benchmarks/quality/instruct_study.py`)", "",
             f"Prompt ({len(res['prompt'])} tokens): \"{res['prompt_text']}\"; setting {res['setting']}.", "",
             "| configuration | steps | steps per sequence | pair-TV | gen NLL / token | unigram entropy (bits) |",
             "|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['config']} | {r['steps'] or '-'} | {_fmt(r['calls'])} | {_fmt(r['pair_tv'])} | "
                     f"{_fmt(r['nll'])} | {_fmt(r['entropy_bits'])} |")
    (HERE / "instruct_results.md").write_text("\n".join(lines) + "\n")


def plot(res):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    curves = {}
    for r in res["rows"]:
        if r["steps"] is not None:
            curves.setdefault(r["config"], []).append((r["steps"], r["pair_tv"][0], r["entropy_bits"][0]))
    floor = res["rows"][0]
    for label, pts in curves.items():
        pts.sort()
        axes[0].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        axes[1].plot([p[0] for p in pts], [p[2] for p in pts], marker="o", label=label)
    axes[0].axhline(floor["pair_tv"][0], color="gray", linestyle="--", label="exact samples (noise floor)")
    axes[1].axhline(floor["entropy_bits"][0], color="gray", linestyle="--", label="exact samples")
    for ax, name in zip(axes, ("adjacent-pair TV to the exact conditional", "unigram entropy (bits)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("steps")
        ax.set_ylabel(name)
    axes[0].legend(fontsize=7)
    fig.suptitle("Unmasking rules given a prompt, English-like oracle")
    fig.tight_layout()
    fig.savefig(HERE / "instruct.png", dpi=110)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--prompt-length", type=int, default=8)
    p.add_argument("--gen-length", type=int, default=32)
    p.add_argument("--block-length", type=int, default=8)
    p.add_argument("--replicates", type=int, default=4)
    p.add_argument("--steps", type=int, nargs="+", default=[8, 16, 32, 64])
    args = p.parse_args(argv)
    res = study(args)
    write(res)
    plot(res)


if __name__ == "__main__":
    main()
