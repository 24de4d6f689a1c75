"""Speculative decoding (sampler="speculative") on the oracle languages: quality against cost.

English-like preset, L = 32, W = 8, temperature 1, ``--n`` sequences for each of ``--seeds`` seeds (means +- SE
over seeds): exact mode (K = 1, w = 0), the uncorrected product chain (K = 1, w = 0.7), SNIS and the released
argmax rule with K particles; then the full-joint TV on a tiny enumerable HMM (3 states, 4 tokens, length 5)
against K.  Writes ``speculative_results.md`` and ``.json`` beside this file.

    python benchmarks/quality/speculative_study.py [--n 2048] [--seeds 3] [--particles 4 16]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import edlm_engine  # noqa: E402
from edlm_engine.oracle import HMMLanguage, generative_nll, pair_tv, unigram_entropy  # noqa: E402
from study import mean_se  # noqa: E402


def english_rows(args):
    lang = HMMLanguage.english()
    configs = [("exact samples", None), ("K=1 w=0 (exact mode)", dict())]
    configs.append(("K=1 w=0.7 (product chain, uncorrected)", dict(poe_weight=0.7)))
    for K in args.particles:
        configs.append((f"K={K} w=0.7 snis", dict(particles=K, poe_weight=0.7)))
    configs.append((f"K={max(args.particles)} w=0.7 argmax (released rule)",
                    dict(particles=max(args.particles), poe_weight=0.7, selection="argmax")))
    rows = []
    for label, kw in configs:
        t0, results = time.perf_counter(), []
        for seed in range(args.seeds):
            if kw is None:
                tokens, stats = lang.sample(args.n, 32, seed=100 + seed), {}
            else:
                out = edlm_engine.sample(lang.denoiser(), lang.ar_energy(), n=args.n, seq_len=32, sampler="speculative",
                                         verify_window=8, seed=seed, batch_size=max(1, 4096 // kw.get("particles", 1)),
                                         **kw)
                tokens, stats = out.tokens, out.stats
            results.append((tokens, stats))
        row = dict(config=label, seconds=(time.perf_counter() - t0) / args.seeds)
        row["pair_tv"] = mean_se([pair_tv(t, lang) for t, _ in results])
        row["nll"] = mean_se([generative_nll(t, lang)[0] for t, _ in results])
        row["entropy_bits"] = mean_se([unigram_entropy(t, lang.vocab_size)[1] for t, _ in results])
        for key in ("denoiser_calls_per_sequence", "ar_calls_per_sequence", "ar_tokens_per_sequence", "acceptance_rate",
                    "mean_ess"):
            vals = [s[key] for _, s in results if s.get(key) is not None]
            row[key] = mean_se(vals) if vals else None
        rows.append(row)
        print(row, flush=True)
    return rows


def tiny_rows(args):
    lang = HMMLanguage.random(n_states=3, vocab_size=4, seed=1)
    L = 5
    probs = lang.log_prob(torch.tensor(list(itertools.product(range(4), repeat=L)))).exp()

    def joint_tv(x):
        idx = (x * (4 ** torch.arange(L - 1, -1, -1))).sum(1)
        return float(0.5 * (torch.bincount(idx, minlength=4**L).double() / x.shape[0] - probs).abs().sum())

    rows = [dict(config="exact samples", joint_tv=joint_tv(lang.sample(args.tiny_n, L, seed=7)))]
    for K, selection in [(1, "snis"), (4, "snis"), (16, "snis"), (64, "snis"), (16, "argmax")]:
        out = edlm_engine.sample(lang.denoiser(), lang.ar_energy(), n=args.tiny_n, seq_len=L, sampler="speculative",
                                 particles=K, poe_weight=0.7, selection=selection, seed=0,
                                 batch_size=max(1, 50_000 // K))
        rows.append(dict(config=f"K={K} w=0.7 {selection}", joint_tv=joint_tv(out.tokens),
                         mean_ess=out.stats["mean_ess"]))
        print(rows[-1], flush=True)
    return rows


def _fmt(v):
    return "-" if v is None else f"{v[0]:.3f} +- {v[1]:.3f}" if isinstance(v, (list, tuple)) else f"{v:.4f}"


def write(res):
    (HERE / "speculative_results.json").write_text(json.dumps(res, indent=1))
    lines = ["# Speculative decoding on the oracle (`python benchmarks/quality/speculative_study.py`)", "",
             f"English-like preset, L = 32, W = 8, T = 1; {res['setting']}; means +- SE over seeds.", "",
             "| configuration | pair-TV | gen NLL / token | unigram entropy (bits) | denoiser calls / seq | "
             "AR calls / seq | AR tokens / seq | acceptance | mean ESS (per round) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in res["english"]:
        lines.append(f"| {r['config']} | {_fmt(r['pair_tv'])} | {_fmt(r['nll'])} | {_fmt(r['entropy_bits'])} | "
                     f"{_fmt(r['denoiser_calls_per_sequence'])} | {_fmt(r['ar_calls_per_sequence'])} | "
                     f"{_fmt(r['ar_tokens_per_sequence'])} | "
                     f"{_fmt(r['acceptance_rate'])} | {_fmt(r['mean_ess'])} |")
    lines += ["", f"Tiny HMM (3 states, 4 tokens, length 5), n = {res['setting']['tiny_n']}: full-joint TV.", "",
              "| configuration | joint TV | mean ESS |", "|---|---|---|"]
    for r in res["tiny"]:
        lines.append(f"| {r['config']} | {r['joint_tv']:.4f} | {_fmt(r.get('mean_ess'))} |")
    (HERE / "speculative_results.md").write_text("\n".join(lines) + "\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--particles", type=int, nargs="+", default=[4, 16])
    p.add_argument("--tiny-n", type=int, default=100_000)
    args = p.parse_args(argv)
    write(dict(setting=vars(args), english=english_rows(args), tiny=tiny_rows(args)))


if __name__ == "__main__":
    main()
