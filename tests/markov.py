"""A strongly correlated Markov chain for whole-sampler tests, as an oracle HMM with identity emissions."""

import torch

from edlm_engine.oracle import HMMLanguage


def cyclic_chain(V=4, stay=0.85):
    """The next token is x + 1 (mod V) with probability ``stay``; tokens are the states (mask id V)."""
    P = torch.full((V, V), (1 - stay) / (V - 1), dtype=torch.float64)
    for a in range(V):
        P[a, (a + 1) % V] = stay
    return HMMLanguage(torch.full((V,), 1.0 / V, dtype=torch.float64), P, torch.eye(V, dtype=torch.float64))


def pair_counts(x, V):
    """Counts of adjacent pairs per position: [L - 1, V, V]."""
    n, L = x.shape
    idx = x[:, :-1] * V + x[:, 1:]
    counts = torch.zeros(L - 1, V * V, dtype=torch.float64)
    counts.scatter_add_(1, idx.T, torch.ones_like(idx.T, dtype=torch.float64))
    return counts.view(L - 1, V, V)


def pair_tv(x, lang):
    """Mean over positions of the total variation between empirical and exact adjacent-pair distributions."""
    n, L = x.shape
    emp = pair_counts(x, lang.vocab_size) / n
    return float(0.5 * (emp - lang.pair_marginals(L)).abs().sum((1, 2)).mean())


def attention_recording(base):
    """A denoiser that answers as ``base`` and keeps the attention mask of every call in ``.seen``."""

    def denoiser(x_t, t, attention_mask):
        denoiser.seen.append(attention_mask.clone())
        return base(x_t, t)

    denoiser.seen, denoiser.time_agnostic, denoiser.mask_id = [], True, base.mask_id
    return denoiser
