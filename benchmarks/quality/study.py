"""Quality study on the English-like oracle language (the oracle issue's full study).

Every configuration runs ``--replicates`` times with different seeds; each figure is the mean with its standard
error over replicates.  Results go to ``results.json`` and ``results.md`` beside this file, the plot to
``quality.png``.

    python benchmarks/quality/study.py [--n 256] [--seq-len 32] [--replicates 4] [--steps 2 4 8 16 32]
        [--vocab50k-n 16] [--vocab50k-steps 128 1024]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

import edlm_engine
from edlm_engine import Energy
from edlm_engine.oracle import HMMLanguage, generative_nll, pair_tv, unigram_entropy

HERE = Path(__file__).resolve().parent


def configurations(lang, steps):
    """(label, sample() keyword arguments) of every configuration in the study."""
    exact = lang.energy("all")
    flipped = Energy(lambda x0, x_t, log_q: -exact(x0, x_t, log_q))
    out = []
    for T in steps:
        out.append(("ancestral fp64", T, dict(steps=T)))
        out.append(("ancestral fp32-gumbel", T, dict(steps=T, precision="fp32-gumbel")))
        for k in (2, 4, 8):
            for window in ((0.8, 1.0), (0.0, 1.0)):
                out.append((f"EDLM k={k} window={window}", T, dict(steps=T, energy=exact, is_size=k, is_window=window)))
        out.append(("EDLM k=8 window=(0,1) masked positions", T,
                    dict(steps=T, energy=lang.energy("masked"), is_size=8, is_window=(0.0, 1.0))))
        out.append(("EDLM k=8 window=(0,1) reference sign softmax(+E)", T,
                    dict(steps=T, energy=flipped, is_size=8, is_window=(0.0, 1.0))))
    out.append(("first_hitting", "L", dict(sampler="first_hitting")))
    return out


def mean_se(values):
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, float("nan")
    var = sum((v - m) ** 2 for v in values) / (len(values) - 1)
    return m, math.sqrt(var / len(values))


def summarize(label, T, tokens_list, seconds, metrics):
    """One result row: each metric's mean and standard error over the replicates, printed as it comes."""
    row = dict(config=label, steps=T, seconds=seconds / len(tokens_list))
    for name, fn in metrics.items():
        row[name] = mean_se([fn(t) for t in tokens_list])
    print(f"{label:<52}{str(T):>6}  " + "  ".join(f"{k} {row[k][0]:.4f}+-{row[k][1]:.4f}" for k in metrics),
          flush=True)
    return row


def timed(fn, replicates):
    """fn(r) for every replicate r, and the seconds they took."""
    t0 = time.perf_counter()
    out = [fn(r) for r in range(replicates)]
    return out, time.perf_counter() - t0


def run(args):
    lang = HMMLanguage.english()
    n, L = args.n, args.seq_len
    metrics = dict(pair_tv=lambda t: pair_tv(t, lang), gen_nll=lambda t: generative_nll(t, lang)[0],
                   entropy_bits=lambda t: unigram_entropy(t, lang.vocab_size)[1])
    results = [summarize("exact samples (noise floor)", "-",
                         *timed(lambda r: lang.sample(n, L, seed=1000 + r), args.replicates), metrics)]
    for label, T, kw in configurations(lang, args.steps):
        kw = dict(kw)
        energy = kw.pop("energy", None)
        toks, seconds = timed(lambda r: edlm_engine.sample(lang.denoiser(), energy, n=n, seq_len=L, seed=r, **kw).tokens,
                              args.replicates)
        results.append(summarize(label, T, toks, seconds, metrics))
    return results


def run_vocab50k(args):
    """Exact vs fp32-gumbel ancestral sampling on the Zipf language over a GPT-2-sized vocabulary.

    The English preset's 219 words are too few for the fp32-gumbel tail loss to show; here every position is
    an independent Zipf draw over 50257 tokens, so the exact sampler's output law is the unigram itself: gen
    NLL per token must equal its entropy, and the share of tokens ranked beyond 1000 must equal the tail mass.
    """
    lang = HMMLanguage.zipf(50257)
    p = lang.emit[0]
    n, L = args.vocab50k_n, args.seq_len
    metrics = dict(gen_nll=lambda t: generative_nll(t, lang)[0],
                   entropy_bits=lambda t: unigram_entropy(t, lang.vocab_size)[1],
                   tail_share=lambda t: float((t >= 1000).double().mean()))
    rows = [summarize("50k exact samples", "-", *timed(lambda r: lang.sample(n, L, seed=2000 + r), args.replicates),
                      metrics)]
    for T in args.vocab50k_steps:
        for precision in ("fp64", "fp32-gumbel"):
            toks, seconds = timed(lambda r: edlm_engine.sample(lang.denoiser(), n=n, seq_len=L, steps=T,
                                                               precision=precision, seed=r).tokens, args.replicates)
            rows.append(summarize(f"50k ancestral {precision}", T, toks, seconds, metrics))
    return dict(vocab_size=lang.vocab_size, entropy_nats=float(-(p * p.log()).sum()), tail_mass=float(p[1000:].sum()),
                n=n, rows=rows)


def write(results, args, vocab50k=None):
    meta = dict(n=args.n, seq_len=args.seq_len, replicates=args.replicates, steps=args.steps,
                torch=torch.__version__, edlm_engine=edlm_engine.__version__)
    (HERE / "results.json").write_text(json.dumps(dict(meta=meta, results=results, vocab50k=vocab50k), indent=2))
    lines = [f"# Quality study on the English-like oracle language\n",
             f"n = {args.n} sequences of {args.seq_len} tokens per replicate, {args.replicates} replicates; "
             "mean +- standard error over replicates.\n",
             "| configuration | steps | pair-TV | gen NLL / token | unigram entropy (bits) | seconds |",
             "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['config']} | {r['steps']} | {r['pair_tv'][0]:.4f} +- {r['pair_tv'][1]:.4f} | "
                     f"{r['gen_nll'][0]:.3f} +- {r['gen_nll'][1]:.3f} | "
                     f"{r['entropy_bits'][0]:.3f} +- {r['entropy_bits'][1]:.3f} | {r['seconds']:.2f} |")
    if vocab50k:
        lines += ["", f"## fp32-gumbel on a 50k-token vocabulary\n",
                  f"Independent Zipf(1) tokens over {vocab50k['vocab_size']} ids (`HMMLanguage.zipf()`), n = "
                  f"{vocab50k['n']} sequences of {args.seq_len} tokens per replicate, {args.replicates} replicates. "
                  f"Exact values: entropy {vocab50k['entropy_nats']:.3f} nats per token (the expected gen NLL of "
                  f"an exact sampler), tail mass beyond rank 1000 {vocab50k['tail_mass']:.3f}. The English "
                  "preset's 219 words are too few for the loss to show.\n",
                  "| sampler | steps | gen NLL / token | unigram entropy (bits) | share beyond rank 1000 | seconds |",
                  "|---|---|---|---|---|---|"]
        for r in vocab50k["rows"]:
            lines.append(f"| {r['config'][4:]} | {r['steps']} | {r['gen_nll'][0]:.3f} +- {r['gen_nll'][1]:.3f} | "
                         f"{r['entropy_bits'][0]:.3f} +- {r['entropy_bits'][1]:.3f} | "
                         f"{r['tail_share'][0]:.3f} +- {r['tail_share'][1]:.3f} | {r['seconds']:.2f} |")
    (HERE / "results.md").write_text("\n".join(lines) + "\n")


def plot(results):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label in ("ancestral fp64", "EDLM k=8 window=(0.0, 1.0)", "EDLM k=8 window=(0.8, 1.0)",
                  "EDLM k=8 window=(0,1) reference sign softmax(+E)"):
        pts = [(r["steps"], r["pair_tv"][0], r["pair_tv"][1]) for r in results if r["config"] == label]
        if pts:
            xs, ys, es = zip(*pts)
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=label)
    floor = [r for r in results if r["steps"] == "-"]
    if floor:
        ax.axhline(floor[0]["pair_tv"][0], color="gray", linestyle="--", label="exact samples (noise floor)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("denoising steps")
    ax.set_ylabel("adjacent-pair total variation")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(HERE / "quality.png", dpi=120)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--replicates", type=int, default=4)
    p.add_argument("--steps", type=int, nargs="+", default=[2, 4, 8, 16, 32])
    p.add_argument("--vocab50k-n", type=int, default=16, help="sequences per replicate on the 50k vocabulary")
    p.add_argument("--vocab50k-steps", type=int, nargs="*", default=[128, 1024],
                   help="step counts on the 50k vocabulary (none skips it)")
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    results = run(args)
    vocab50k = run_vocab50k(args) if args.vocab50k_steps else None
    write(results, args, vocab50k)
    if not args.no_plot:
        plot(results)


if __name__ == "__main__":
    main()
