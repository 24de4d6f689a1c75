"""How many steps EDLM saves, against how strongly adjacent tokens depend on each other.

EDLM weights whole candidate sequences, so with k candidates its importance sampling can only repair a joint
that k draws from the product of marginals cover; the log-weight variance grows with the mutual information
between neighbouring masked tokens.  This study measures, on oracle languages from weakly to strongly coupled,
the mutual information per adjacent pair, the mean ESS, and the step saving of EDLM k = 8 (window (0, 1)):
``saving(T) = T' / T`` where plain ancestral needs T' steps to reach EDLM's figure at T steps (log-log
interpolation between measured step counts).  The oracle issue's bar asks for a saving of at least 2 at some
T <= 8 in pair-TV on the English preset.

    python benchmarks/quality/saving.py [--n 2048] [--seq-len 32]

Writes ``saving.md`` beside this file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import edlm_engine
from edlm_engine.oracle import HMMLanguage, generative_nll, pair_tv, steps_to_reach

HERE = Path(__file__).resolve().parent
ANCESTRAL_STEPS = (1, 2, 4, 8, 16, 32, 64)
EDLM_STEPS = (2, 4, 8)


def adjacent_mutual_information(lang: HMMLanguage, L: int) -> float:
    """I(x_i; x_{i+1}) in nats, averaged over positions, from the exact pair marginals."""
    out = []
    for P in lang.pair_marginals(L):
        a, b = P.sum(1, keepdim=True), P.sum(0, keepdim=True)
        nz = P > 0
        out.append(float((P[nz] * (P[nz].log() - (a * b)[nz].log())).sum()))
    return sum(out) / len(out)


def smoothed_english(smoothing: float) -> HMMLanguage:
    """The English preset with more of every transition row spread uniformly over all states."""
    lang = HMMLanguage.english()
    S = lang.n_states
    extra = (smoothing - 0.005) / (1 - 0.005)  # the preset already spreads 0.005
    trans = (1 - extra) * lang.trans + extra / S
    return HMMLanguage(lang.init, trans, lang.emit, words=lang.words)


def languages():
    yield "English preset (smoothing 0.005)", HMMLanguage.english()
    for sm in (0.05, 0.15):
        yield f"English, smoothing {sm}", smoothed_english(sm)
    for c in (0.1, 0.3, 1.0):
        yield f"random HMM 8 states, 64 tokens, Dirichlet {c}", HMMLanguage.random(8, 64, seed=1, concentration=c)


def study(lang, n, L):
    exact = lang.sample(n, L, seed=12345)
    floor_tv, floor_nll = pair_tv(exact, lang), generative_nll(exact, lang)[0]
    anc_tv, anc_nll = {}, {}
    for T in ANCESTRAL_STEPS:
        x = edlm_engine.sample(lang.denoiser(), n=n, seq_len=L, steps=T, seed=0).tokens
        anc_tv[T] = pair_tv(x, lang) - floor_tv
        anc_nll[T] = generative_nll(x, lang)[0] - floor_nll
    rows = []
    for T in EDLM_STEPS:
        out = edlm_engine.sample(lang.denoiser(), lang.energy(), n=n, seq_len=L, steps=T, seed=0, is_size=8,
                                 is_window=(0.0, 1.0))
        tv = pair_tv(out.tokens, lang) - floor_tv
        nll = generative_nll(out.tokens, lang)[0] - floor_nll
        rows.append(dict(T=T, tv=tv, nll=nll, anc_tv=anc_tv[T], anc_nll=anc_nll[T], ess=out.stats["mean_ess"],
                         saving_tv=steps_to_reach(anc_tv, tv) / T, saving_nll=steps_to_reach(anc_nll, nll) / T))
    return floor_tv, rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--seq-len", type=int, default=32)
    args = p.parse_args(argv)
    lines = ["# EDLM step saving against adjacent-token dependence\n",
             f"n = {args.n} sequences of {args.seq_len} tokens per configuration, one seed; EDLM k = 8, window "
             "(0, 1). Excess = figure minus that of exact samples of the same size (the noise floor). Saving = "
             "ancestral steps needed to match EDLM at T steps, divided by T (ancestral measured at "
             f"{', '.join(map(str, ANCESTRAL_STEPS))} steps).\n",
             "| language | MI per adjacent pair (nats) | T | pair-TV excess ancestral / EDLM | saving (pair-TV) | "
             "gen NLL excess ancestral / EDLM | saving (gen NLL) | mean ESS of 8 |",
             "|---|---|---|---|---|---|---|---|"]
    for name, lang in languages():
        mi = adjacent_mutual_information(lang, args.seq_len)
        floor, rows = study(lang, args.n, args.seq_len)
        for r in rows:
            line = (f"| {name} | {mi:.3f} | {r['T']} | {r['anc_tv']:.4f} / {r['tv']:.4f} | {r['saving_tv']:.2f}x | "
                    f"{r['anc_nll']:.3f} / {r['nll']:.3f} | {r['saving_nll']:.2f}x | {r['ess']:.2f} |")
            print(line, flush=True)
            lines.append(line)
    (HERE / "saving.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
