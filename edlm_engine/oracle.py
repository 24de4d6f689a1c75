"""A language whose distribution is known exactly: a hidden Markov model over tokens.

Real checkpoints cannot be downloaded here, so quality is measured against an HMM: exact log-likelihood
(forward algorithm), exact samples, and the exact denoiser of masked diffusion, p(x0_i | x_t), by
forward-backward with the masked positions marginalized.  The denoiser plugs into :func:`edlm_engine.sample`
as ``model`` and the log-likelihood as the EDLM energy.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence

import torch

from .models import AREnergy, Energy, LogLikelihoodEnergy

__all__ = ["HMMLanguage", "pair_tv", "generative_nll", "unigram_entropy", "steps_to_reach"]


class HMMLanguage:
    """Hidden Markov model language: states s_i ~ trans[s_{i-1}], tokens x_i ~ emit[s_i].

    Token ids are ``0 .. V-1``; the mask id is ``V`` (one past the data tokens).

    Parameters
    ----------
    init : Tensor [S]
        Initial state distribution.
    trans : Tensor [S, S]
        Row-stochastic transition matrix.
    emit : Tensor [S, V]
        Row-stochastic emission matrix.
    words : list of str, optional
        Spelling of each token, for :meth:`decode`.

    Examples
    --------
    >>> import edlm_engine
    >>> lang = HMMLanguage.random(n_states=3, vocab_size=5, seed=0)
    >>> x = lang.sample(4, 6, seed=1)
    >>> x.shape, lang.log_prob(x).shape
    (torch.Size([4, 6]), torch.Size([4]))
    >>> out = edlm_engine.sample(lang.denoiser(), lang.energy(), n=2, seq_len=6, steps=3, is_window=(0, 1))
    >>> out.tokens.shape
    torch.Size([2, 6])
    """

    def __init__(self, init, trans, emit, words: Optional[Sequence[str]] = None):
        self.init = torch.as_tensor(init, dtype=torch.float64)
        self.trans = torch.as_tensor(trans, dtype=torch.float64)
        self.emit = torch.as_tensor(emit, dtype=torch.float64)
        S, V = self.emit.shape
        if self.init.shape != (S,) or self.trans.shape != (S, S):
            raise ValueError(f"init must be [S], trans [S, S], emit [S, V]; got {tuple(self.init.shape)}, "
                             f"{tuple(self.trans.shape)}, {tuple(self.emit.shape)}")
        for name, t in (("init", self.init[None]), ("trans", self.trans), ("emit", self.emit)):
            if (t < 0).any() or not torch.allclose(t.sum(-1), torch.ones(t.shape[0], dtype=torch.float64), atol=1e-9):
                raise ValueError(f"{name} rows must be non-negative and sum to 1")
        if words is not None and len(words) != V:
            raise ValueError(f"words must have {V} entries, got {len(words)}")
        self.words = list(words) if words is not None else None
        self.n_states, self.vocab_size = S, V
        self.mask_id = V

    @classmethod
    def random(cls, n_states: int = 8, vocab_size: int = 32, seed: int = 0, concentration: float = 0.3):
        """A random HMM with Dirichlet(concentration) rows: small concentration gives peaked, structured rows."""
        g = torch.Generator().manual_seed(seed)

        def dirichlet(rows, cols):
            x = torch._standard_gamma(torch.full((rows, cols), float(concentration), dtype=torch.float64), generator=g)
            x = x + 1e-12
            return x / x.sum(-1, keepdim=True)

        return cls(dirichlet(1, n_states)[0], dirichlet(n_states, n_states), dirichlet(n_states, vocab_size))

    @classmethod
    def zipf(cls, vocab_size: int = 50257, exponent: float = 1.0):
        """An independent-token language (one state) with Zipf weights ``1 / rank**exponent``.

        With a GPT-2-sized vocabulary its long tail is where a truncated sampler loses mass: the configuration
        in which ``precision="fp32-gumbel"`` shows its entropy loss.  Its exact denoiser is the same row at every
        position, returned as a broadcast view, so large vocabularies cost no [B, L, V] copy.

        Examples
        --------
        >>> lang = HMMLanguage.zipf(vocab_size=1000)
        >>> round(float(lang.emit[0, 0] / lang.emit[0, 1]), 6)
        2.0
        """
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
            raise ValueError(f"vocab_size must be an int >= 1, got {vocab_size!r}")
        if not exponent >= 0 or math.isinf(exponent):
            raise ValueError(f"exponent must be a finite number >= 0, got {exponent!r}")
        w = torch.arange(1, vocab_size + 1, dtype=torch.float64).pow(-float(exponent))
        return cls(torch.ones(1, dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64), (w / w.sum())[None])

    @classmethod
    def english(cls):
        """The English-like preset: parts of speech with number agreement emitting a few hundred words."""
        from .oracle_preset import english_preset

        p = english_preset()
        return cls(p["init"], p["trans"], p["emit"], words=p["words"])

    # ------------------------------------------------------------------ exact quantities

    def _obs(self, x):
        """Per position and state, the likelihood of what is observed there (1 where masked)."""
        x = x.cpu()
        masked = x == self.mask_id
        obs = self.emit.T[x.clamp(max=self.vocab_size - 1)]  # [N, L, S]
        return torch.where(masked[..., None], torch.ones_like(obs), obs)

    def log_prob(self, x: torch.Tensor, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Exact log p(x) by the forward algorithm (masked positions marginalized), float64 [N].

        With ``weights`` [N, L], the sum of ``weights[:, i] * log p(x_i | x_<i)`` instead.
        """
        obs = self._obs(x)
        w = None if weights is None else weights.cpu().double()
        a = self.init * obs[:, 0]
        logp = torch.zeros(x.shape[0], dtype=torch.float64)
        for i in range(x.shape[1]):
            if i:
                a = (a @ self.trans) * obs[:, i]
            c = a.sum(1)
            logp = logp + (torch.log(c) if w is None else w[:, i] * torch.log(c))
            a = a / c[:, None]
        return logp.to(x.device)

    def posterior_marginals(self, x_t: torch.Tensor) -> torch.Tensor:
        """p(x_i = v | unmasked tokens of x_t) for every position, float64 [B, L, V]."""
        obs = self._obs(x_t)
        B, L, S = obs.shape
        fwd = torch.empty(B, L, S, dtype=torch.float64)
        a = self.init * obs[:, 0]
        fwd[:, 0] = a / a.sum(1, keepdim=True)
        for i in range(1, L):
            a = (fwd[:, i - 1] @ self.trans) * obs[:, i]
            fwd[:, i] = a / a.sum(1, keepdim=True)
        bwd = torch.ones(B, L, S, dtype=torch.float64)
        for i in range(L - 2, -1, -1):
            b = (obs[:, i + 1] * bwd[:, i + 1]) @ self.trans.T
            bwd[:, i] = b / b.sum(1, keepdim=True)
        # At a masked position obs is 1, so fwd * bwd is the state posterior given everything else.
        state = fwd * bwd
        state = state / state.sum(-1, keepdim=True)
        return state @ self.emit

    def denoiser(self):
        """The exact denoiser as a callable ``(x_t, t) -> logits [B, L, V + 1]`` (mask column -inf)."""
        lang = self

        def exact_denoiser(x_t, t):
            if lang.n_states == 1:  # independent tokens: the posterior at every position is the emission row
                row = torch.cat([lang.emit[0].log(), torch.tensor([float("-inf")], dtype=torch.float64)])
                return row.float().to(x_t.device).expand(*x_t.shape, lang.vocab_size + 1)
            # One float32 [B, L, V + 1] output written in place: no float64 log or concatenated copy.
            out = torch.empty(*x_t.shape, lang.vocab_size + 1, dtype=torch.float32)
            out[..., :-1] = lang.posterior_marginals(x_t).log_()
            out[..., -1] = float("-inf")
            return out.to(x_t.device)

        exact_denoiser.time_agnostic = True
        exact_denoiser.mask_id = self.mask_id
        return exact_denoiser

    def ar_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """The exact autoregressive conditionals: float64 [N, L, V], ``[n, j, v] = log p(x_j = v | x_<j)`` (forward
        filtering; masked positions of ``x`` count as unobserved)."""
        obs = self._obs(x)
        N, L, S = obs.shape
        out = torch.empty(N, L, self.vocab_size, dtype=torch.float64)
        predicted = self.init.expand(N, S)
        for j in range(L):
            out[:, j] = (predicted @ self.emit).log()
            filtered = predicted * obs[:, j]
            predicted = (filtered / filtered.sum(1, keepdim=True)) @ self.trans
        return out.to(x.device)

    def ar_energy(self, positions: str = "all"):
        """The exact EDLM energy through the language's autoregressive conditionals (an :class:`AREnergy`)."""
        return AREnergy(self.ar_log_probs, positions=positions, vocab_size=self.vocab_size, mask_id=self.mask_id)

    def energy(self, positions: str = "all"):
        """The exact EDLM energy -log p(x0) + log q(x0 | x_t).

        ``positions="masked"`` sums log p(x_i | x_<i) only over positions masked in x_t: the reference code's
        carry-over variant, which is no longer an exact importance weight.
        """
        if positions == "all":
            return LogLikelihoodEnergy(self.log_prob)
        if positions != "masked":
            raise ValueError(f"positions must be 'all' or 'masked', got {positions!r}")
        lang = self
        return Energy(lambda x0, x_t, log_q: -lang.log_prob(x0, x_t == lang.mask_id) + log_q.double())

    def start(self, prompt: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Distribution of the first state to generate: ``init``, or after a prompt, the filtered distribution of
        the prompt's last state moved one step (exactly P(s_P | prompt))."""
        if prompt is None:
            return self.init
        ids = torch.as_tensor(list(prompt), dtype=torch.int64)
        if ids.numel() == 0 or int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size:
            raise ValueError(f"prompt must be a non-empty sequence of token ids in [0, {self.vocab_size})")
        a = self.init * self.emit[:, ids[0]]
        for v in ids[1:]:
            a = (a / a.sum()) @ self.trans * self.emit[:, v]
        return (a / a.sum()) @ self.trans

    def sample(self, n: int, L: int, seed: int = 0, prompt: Optional[Sequence[int]] = None) -> torch.Tensor:
        """n exact samples of length L (ancestral over states, then emissions); with a prompt, n exact samples of
        the L tokens that follow it."""
        g = torch.Generator().manual_seed(seed)
        s = torch.multinomial(self.start(prompt), n, replacement=True, generator=g)
        x = torch.empty(n, L, dtype=torch.int64)
        for i in range(L):
            if i:
                s = torch.multinomial(self.trans[s], 1, generator=g).squeeze(1)
            x[:, i] = torch.multinomial(self.emit[s], 1, generator=g).squeeze(1)
        return x

    def state_marginals(self, L: int, prompt: Optional[Sequence[int]] = None) -> torch.Tensor:
        """P(s_i) for i < L (of the continuation, with a prompt): [L, S]."""
        out, pi = [], self.start(prompt).clone()
        for _ in range(L):
            out.append(pi)
            pi = pi @ self.trans
        return torch.stack(out)

    def pair_marginals(self, L: int, prompt: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Exact P(x_i = a, x_{i+1} = b) for i < L - 1 (of the continuation, with a prompt): [L - 1, V, V]."""
        pis = self.state_marginals(L, prompt)[:-1]  # [L-1, S]
        left = pis[:, :, None] * self.emit[None]  # [L-1, S, V]: P(s_i, x_i)
        right = self.trans @ self.emit  # [S, V]: P(x_{i+1} | s_i)
        return torch.einsum("isa,sb->iab", left, right)

    def decode(self, tokens: torch.Tensor) -> List[str]:
        """Text of each sequence (token ids as numbers when the language has no words)."""
        from .oracle_preset import decode_words

        rows = tokens.tolist() if tokens.dim() == 2 else [tokens.tolist()]
        if self.words is None:
            return [" ".join("_" if t == self.mask_id else str(t) for t in r) for r in rows]
        words = self.words + ["_"]
        return [decode_words(words, r) for r in rows]

    def __repr__(self):
        return f"HMMLanguage(states={self.n_states}, vocab={self.vocab_size})"


def pair_tv(tokens: torch.Tensor, lang: HMMLanguage, prompt: Optional[Sequence[int]] = None) -> float:
    """Total variation between the adjacent-pair distribution of the samples and the exact one.

    Pairs are pooled over positions (n * (L - 1) pairs) and compared with the exact pair marginals averaged
    over positions, so the sampling-noise floor stays low for vocabularies of hundreds of tokens.  With a
    prompt, ``tokens`` are continuations and the reference is the exact conditional distribution.
    """
    n, L = tokens.shape
    V = lang.vocab_size
    idx = (tokens[:, :-1] * V + tokens[:, 1:]).reshape(-1).cpu()
    emp = torch.bincount(idx, minlength=V * V).double() / idx.numel()
    exact = lang.pair_marginals(L, prompt).mean(0).reshape(-1)
    return float(0.5 * (emp - exact).abs().sum())


def generative_nll(tokens: torch.Tensor, lang: HMMLanguage, prompt: Optional[Sequence[int]] = None) -> tuple:
    """Mean negative log-likelihood per token under the true model, with its standard error; with a prompt,
    of the continuations given it."""
    tokens = tokens.cpu()
    if prompt is None:
        per_token = -lang.log_prob(tokens) / tokens.shape[1]
    else:
        lang.start(prompt)  # names a bad prompt
        head = torch.as_tensor(list(prompt), dtype=torch.int64).expand(tokens.shape[0], -1)
        whole = lang.log_prob(torch.cat([head, tokens], 1))
        per_token = -(whole - lang.log_prob(head[:1]).expand_as(whole)) / tokens.shape[1]
    return float(per_token.mean()), float(per_token.std() / math.sqrt(len(per_token)))


def unigram_entropy(tokens: torch.Tensor, vocab_size: int) -> tuple:
    """Entropy of the empirical unigram distribution of all tokens: (nats, bits)."""
    counts = torch.bincount(tokens.reshape(-1).cpu(), minlength=vocab_size).double()
    p = counts[counts > 0] / counts.sum()
    h = float(-(p * p.log()).sum())
    return h, h / math.log(2)


def steps_to_reach(curve: dict, value: float) -> float:
    """Steps a sampler needs to bring a metric down to ``value``, read off its measured ``{steps: metric}``.

    Interpolates log(metric) against log(steps) between the two step counts that bracket ``value`` (linearly in
    the metric where a value is not positive, as an excess over a noise floor can be); the first bracket wins.
    ``inf`` when even the most steps measured stay above ``value``.  EDLM's step saving at T steps is
    ``steps_to_reach(ancestral, edlm_at_T) / T``.

    Examples
    --------
    >>> steps_to_reach({2: 0.4, 4: 0.2, 8: 0.1}, 0.2), round(steps_to_reach({2: 0.4, 4: 0.2}, 0.3), 3)
    (4.0, 2.667)
    >>> steps_to_reach({2: 0.4, 4: 0.2}, 0.1)
    inf
    """
    if not curve or any(not (isinstance(T, (int, float)) and T > 0) for T in curve):
        raise ValueError(f"curve must map positive step counts to metric values, got {curve!r}")
    if math.isnan(value):
        raise ValueError("value must be a number, got nan")
    xs = sorted(curve)
    if value >= curve[xs[0]]:
        return float(xs[0])
    for lo, hi in zip(xs, xs[1:]):
        a, b = curve[lo], curve[hi]
        if a >= value >= b:
            if value == b:  # also covers a == b
                return float(hi)
            if min(a, b, value) > 0:
                f = (math.log(a) - math.log(value)) / (math.log(a) - math.log(b))
            else:
                f = (a - value) / (a - b)
            return math.exp(math.log(lo) + f * (math.log(hi) - math.log(lo)))
    return math.inf
