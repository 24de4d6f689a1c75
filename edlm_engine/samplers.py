"""Sampling strategies: one class per sampler behind one interface, found by name in a registry.

A strategy turns a batch of initial sequences (mask ids where something is to be generated) into samples. It
gets a :class:`SamplingRun` (the denoiser, the energy, the schedule, the config, the layout of prompt and blocks,
and the run's statistics) and draws its randomness from the ops' Philox stream at its own named offsets, so that
sample ``i`` depends only on ``(seed, i)`` whatever the batch.  Every strategy decodes the generated region in
blocks, left to right (one block unless ``block_length`` says otherwise).  Add a sampler by subclassing
:class:`Sampler` and decorating it with :func:`register_sampler`; ``SampleConfig.sampler`` then accepts its name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple, Type

import torch

from . import ops

__all__ = ["Sampler", "SamplingRun", "Layout", "AncestralSampler", "FirstHittingSampler", "SAMPLERS", "UNMASKING",
           "register_sampler", "get_sampler"]

SAMPLERS: Dict[str, Type["Sampler"]] = {}

# Which masked positions commit at a step of the ancestral sampler.  None: each one with probability p_unmask
# (the exact step).  Otherwise a score per position from ops.sample_scored's [4, B, W] scores (p_draw, p_top1,
# p_top2, entropy); the highest scored commit.  "confidence" is LLaDA's low_confidence (Dream's maskgit_plus
# ranks by p_top1, which equals p_draw at temperature 0).
UNMASKING = {
    "random": None,
    "confidence": lambda s: s[0],
    "margin": lambda s: s[1] - s[2],
    "entropy": lambda s: -s[3],
}


def register_sampler(cls):
    """Class decorator: make a :class:`Sampler` subclass available under its ``name``.

    Examples
    --------
    >>> import edlm_engine
    >>> @register_sampler
    ... class Greedy(AncestralSampler):  # ancestral steps that always take the most likely token
    ...     name = "greedy-ancestral"
    ...     def _rng(self):
    ...         return dict(super()._rng(), temperature=0.0)
    >>> edlm_engine.SampleConfig(sampler="greedy-ancestral").sampler
    'greedy-ancestral'
    >>> del SAMPLERS["greedy-ancestral"]
    """
    SAMPLERS[cls.name] = cls
    return cls


def get_sampler(name: str) -> Type["Sampler"]:
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"sampler must be one of {tuple(SAMPLERS)}, got {name!r}") from None


@dataclass
class Layout:
    """Where things are in the sequences of one ``sample()`` call.

    x_init: int64 [n, L], the initial tokens (mask ids where generated); attention_mask: bool [n, L], False on
    left padding (None without any); prompt_mask: bool [n, L], True on prompt tokens (None without a prompt);
    blocks: the generated region cut into ``(lo, hi)`` column ranges, decoded left to right.
    """

    x_init: torch.Tensor
    blocks: List[Tuple[int, int]]
    attention_mask: Optional[torch.Tensor] = None
    prompt_mask: Optional[torch.Tensor] = None

    @property
    def gen_start(self) -> int:
        return self.blocks[0][0]


class SamplingRun:
    """What the batches of one ``sample()`` call share: models, schedule, config, layout and statistics."""

    def __init__(self, denoiser, energy, schedule, config, layout: Layout, *, shift: bool = False,
                 eos_id: Optional[int] = None):
        self.denoiser, self.energy, self.schedule, self.config = denoiser, energy, schedule, config
        self.layout, self.shift, self.eos_id = layout, shift, eos_id
        self.seq_len = layout.x_init.shape[1]
        self.mask_id = denoiser.mask_id
        self.steps_per_block = config.steps // len(layout.blocks)
        self.stats = dict(denoiser_calls=0, energy_calls=0, candidates_scored=0)
        self.ess: List[torch.Tensor] = []  # per scored sequence (NaN: none), kept on the device until the end
        self.active_steps: Dict[int, torch.Tensor] = {}  # per batch (by its first index): steps each sequence took

    def count_step(self, first: int, active: torch.Tensor) -> None:
        """Record a step for the sequences of the batch that still had something to decode in it."""
        steps = self.active_steps.get(first)
        self.active_steps[first] = active.long() if steps is None else steps + active.long()

    def _rows(self, name: str, first: int, n: int, particles: int = 1) -> Optional[torch.Tensor]:
        full = getattr(self.layout, name)
        i0 = first - self.config.first_index
        return None if full is None else full[i0 : i0 + n // particles].repeat_interleave(particles, 0)

    def denoise(self, x: torch.Tensor, t: torch.Tensor, first: int, particles: int = 1,
                hide_from: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits for the batch ``x`` (whose first sequence is ``first``; each repeated ``particles`` times),
        guided when ``cfg_scale`` > 0.  ``hide_from`` [B]: per row, the column from which positions are hidden
        from a model that takes an attention mask."""
        attention = self._rows("attention_mask", first, x.shape[0], particles)
        if hide_from is not None:
            visible = torch.arange(x.shape[1], device=x.device)[None] < hide_from[:, None]
            attention = visible if attention is None else attention & visible
        logits = self._call(x, t, attention)
        scale = self.config.cfg_scale
        if scale > 0:
            # LLaDA's guidance: u + (s + 1)(c - u), u from the same input with the prompt masked; in place
            prompt = self._rows("prompt_mask", first, x.shape[0], particles)
            unconditional = self._call(torch.where(prompt, self.mask_id, x), t, attention)
            if 0 in logits.stride():
                logits = logits.contiguous()
            read = self.layout.gen_start - int(self.shift)  # outputs before it are never read: left unguided
            for c, u in zip(logits[:, read:], unconditional[:, read:]):  # a sequence at a time: the mask is [L, V]
                impossible = torch.isneginf(c) & torch.isneginf(u)  # -inf - -inf would be NaN
                c.sub_(u).mul_(scale + 1.0).add_(u).masked_fill_(impossible, float("-inf"))
        return logits

    def _call(self, x, t, attention):
        logits = self.denoiser(x, t, attention_mask=attention)
        if self.stats["denoiser_calls"] == 0:
            self.check_energy_covers(logits.shape[-1])
        self.stats["denoiser_calls"] += 1
        return logits

    def check_energy_covers(self, V: int) -> None:
        """The energy must score every id the denoiser can draw (all but the mask when it is the last id)."""
        need = V - 1 if self.mask_id == V - 1 else V
        size = getattr(self.energy, "vocab_size", None)
        if size is not None and size < need:
            raise ValueError(f"energy vocabulary ({size} tokens) cannot cover the denoiser's token ids (logits over "
                             f"{V} ids, mask id {self.mask_id}): the candidates would be unscorable")

    def view(self, logits: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """The logits of positions lo .. hi-1, read in place: with a shifted denoiser (Dream), output i - 1."""
        return logits[:, lo - 1 : hi - 1] if self.shift else logits[:, lo:hi]

    def at(self, logits: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """The logits of position pos[b, j] of each row b (a gather), shifted like :meth:`view`."""
        rows = torch.arange(logits.shape[0], device=logits.device)[:, None]
        return logits[rows, pos - 1 if self.shift else pos]

    def finish(self, x: torch.Tensor, hi: int) -> Tuple[torch.Tensor, bool]:
        """After the block ending at hi: a sequence that generated eos_id holds it everywhere after its first one.

        Returns the tokens and whether every sequence of the batch has finished."""
        if self.eos_id is None:
            return x, False
        start = self.layout.gen_start
        is_eos = x[:, start:hi] == self.eos_id
        first_eos = torch.where(is_eos.any(1), is_eos.long().argmax(1) + start, self.seq_len)
        after = torch.arange(self.seq_len, device=x.device)[None] > first_eos[:, None]
        return torch.where(after, self.eos_id, x), bool((first_eos < self.seq_len).all())

    def fill(self, x: torch.Tensor, first: int) -> torch.Tensor:
        """Final step: whatever is still masked takes the denoiser's argmax."""
        lo = self.layout.gen_start
        if bool((x[:, lo:] == self.mask_id).any()):
            logits = self.denoise(x, torch.zeros(x.shape[0], dtype=torch.float64, device=x.device), first)
            x = x.clone()
            x[:, lo:] = ops.sample_masked(self.view(logits, lo, self.seq_len), x[:, lo:], self.mask_id, 1.0,
                                          seed=self.config.seed, temperature=0.0)
        return x


class Sampler:
    """One sampling strategy.

    Subclasses set ``name``, ``supports_energy`` and their RNG offsets, and implement :meth:`steps` and
    :meth:`run_block`.  The random streams of step ``j`` (counted across the blocks of a batch) sit at offsets
    ``STRIDE * j + OFFSET``, one per stream a step uses.
    """

    name = ""
    supports_energy = False
    uses_steps = False  # whether config.steps sets its number of steps (then split evenly over the blocks)
    STRIDE = 4

    def __init__(self, state: SamplingRun):
        self.state = state
        self.cfg = state.config
        self.step = 0

    def steps(self) -> int:
        """Progress-bar units per batch."""
        raise NotImplementedError

    def run(self, x: torch.Tensor, first: int, bar) -> torch.Tensor:
        """Sample the batch ``x`` whose first sequence has global index ``first``, block after block."""
        self.step = 0
        for lo, hi in self.state.layout.blocks:
            x = self.run_block(x, first, lo, hi, bar)
            x, finished = self.state.finish(x, hi)
            if finished:  # every sequence ended: later blocks are EOS already and cost no denoiser call
                break
        return self.state.fill(x, first)

    def run_block(self, x: torch.Tensor, first: int, lo: int, hi: int, bar) -> torch.Tensor:
        """Decode the masked positions of columns lo .. hi-1."""
        raise NotImplementedError

    def check(self) -> None:
        """Refuse, with a clear error, a configuration this strategy cannot run (called before sampling)."""
        state, cfg = self.state, self.cfg
        if state.energy is not None and not self.supports_energy:
            raise ValueError(f"energy rescoring does not run with sampler={cfg.sampler!r}; samplers that take an "
                             f"energy: {[name for name, cls in SAMPLERS.items() if cls.supports_energy]}")
        n_blocks = len(state.layout.blocks)
        if self.uses_steps and cfg.steps % n_blocks:
            raise ValueError(f"steps ({cfg.steps}) must be a multiple of the number of blocks ({n_blocks}): each "
                             "block takes steps / blocks steps, as in LLaDA")

    def _rng(self):
        return dict(seed=self.cfg.seed, temperature=self.cfg.temperature, top_k=self.cfg.top_k, top_p=self.cfg.top_p,
                    min_p=self.cfg.min_p)

    def _offset(self, stream: int) -> int:
        return self.STRIDE * self.step + stream


@register_sampler
class AncestralSampler(Sampler):
    """MDLM's ancestral sampler from t = 1 to 0 in each block, with EDLM importance sampling inside
    ``is_window``; or, with a scored ``unmasking`` rule, LLaDA-style decoding that commits the best scored
    positions (as many as LLaDA's schedule gives, or as ``threshold`` / ``entropy_bound`` decide)."""

    name = "ancestral"
    supports_energy = True
    uses_steps = True
    CANDIDATES, RESAMPLE, REVEAL, DRAW = 0, 1, 2, 3

    def check(self) -> None:
        super().check()
        if self.state.energy is not None and UNMASKING[self.cfg.unmasking] is not None:
            raise ValueError(f"energy rescoring reweights the exact step: it needs unmasking='random', got "
                             f"{self.cfg.unmasking!r}")

    def steps(self) -> int:
        if self.cfg.threshold is not None or self.cfg.entropy_bound is not None:
            return sum(hi - lo for lo, hi in self.state.layout.blocks)  # at most one step per token
        return self.cfg.steps

    def run_block(self, x, first, lo, hi, bar):
        if UNMASKING[self.cfg.unmasking] is None:
            return self.exact_block(x, first, lo, hi, bar)
        return self.scored_block(x, first, lo, hi, bar)

    def exact_block(self, x, first, lo, hi, bar):
        cfg, state, B, W = self.cfg, self.state, x.shape[0], hi - lo
        times = torch.linspace(1.0, 0.0, state.steps_per_block + 1, dtype=torch.float64)
        reuse = cfg.cache and not state.denoiser.time_conditioned
        logits, changed_any = None, True
        x0_star, star_ok = None, torch.zeros(B, dtype=torch.bool, device=x.device)
        for i in range(state.steps_per_block):
            bar.update(1)
            masked = x[:, lo:hi] == state.mask_id
            state.count_step(first, masked.any(1))
            if bool(masked.any()):
                t, s = float(times[i]), float(times[i + 1])
                if logits is None or changed_any or not reuse:
                    logits = None  # dropped before the next call, so two outputs never coexist
                    logits = state.denoise(x, torch.full((B,), t, dtype=torch.float64, device=x.device), first)
                block = state.view(logits, lo, hi)
                x_prev = x
                x = x.clone()
                if state.energy is not None and cfg.is_window[0] <= t <= cfg.is_window[1]:
                    refresh = ~star_ok & masked.any(1)  # a sequence with nothing masked needs no x0*
                    rows = refresh.nonzero().squeeze(1)  # one read-back: whether any, and which
                    if rows.numel():
                        fresh = self.edlm_candidate(block, x_prev, first, lo, hi, rows)
                        x0_star = fresh if x0_star is None else torch.where(refresh[:, None], fresh, x0_star)
                    x[:, lo:hi] = self.reveal(x_prev[:, lo:hi], x0_star, masked, state.schedule.p_unmask(t, s), first)
                    star_ok[:] = reuse  # the reference keeps revealing from x0* while x_t does not change
                else:
                    x[:, lo:hi] = ops.sample_masked(block, x_prev[:, lo:hi], state.mask_id, state.schedule.p_unmask(t, s),
                                                    offset=self._offset(self.REVEAL), row_offset=first * W,
                                                    precision=cfg.precision, **self._rng())
                    star_ok[:] = False
                changed = (x != x_prev).any(1)
                star_ok &= ~changed
                if reuse:  # only a reused output asks whether anything changed
                    changed_any = bool(changed.any())
            self.step += 1
        return x

    def reveal(self, x_block, x0_star, masked, p_unmask, first):
        """Each masked position takes x0*'s token with probability p_unmask."""
        u = ops.uniform(x_block.shape, seed=self.cfg.seed, offset=self._offset(self.REVEAL),
                        row_offset=first * x_block.shape[1], device=x_block.device)
        return torch.where(masked & (u < p_unmask), x0_star, x_block)

    def edlm_candidate(self, block_logits, x, first, lo, hi, rows):
        """A resampled x0* of the block for every sequence; only ``rows`` (indices) are scored and used.

        Candidates and resampling draws cover the whole batch so every sequence keeps the randomness it has in
        any batch split; the energy, the expensive part, runs on the refreshing rows alone, over the sequence up
        to the block's end (later blocks are still masked).
        """
        state, B, W, k = self.state, x.shape[0], hi - lo, self.cfg.is_size
        cands, log_q = ops.sample_candidates(block_logits, x[:, lo:hi], state.mask_id, k,
                                             offset=self._offset(self.CANDIDATES), row_offset=first * W,
                                             precision=self.cfg.precision, **self._rng())
        b = rows.numel()
        seqs = torch.cat([x[rows, :lo].repeat(k, 1), cands[:, rows].reshape(k * b, W)], 1)
        E = torch.zeros(B, k, dtype=torch.float64, device=x.device)
        seen = state._rows("attention_mask", first, B)  # a prompt's padding, which the energy neither reads nor scores
        seen = None if seen is None else seen[rows, :hi].repeat(k, 1)
        E[rows] = state.energy(seqs, x[rows, :hi].repeat(k, 1), log_q[:, rows].reshape(k * b),
                               attention=seen).to(E.device).reshape(k, b).T
        state.stats["energy_calls"] += 1
        state.stats["candidates_scored"] += k * b
        idx, ess = ops.importance_resample(E, seed=self.cfg.seed, offset=self._offset(self.RESAMPLE),
                                           temperature=self.cfg.is_temperature, row_offset=first)
        state.ess.append(ess[rows])
        return cands[idx, torch.arange(B, device=x.device)]

    def scored_block(self, x, first, lo, hi, bar):
        """Confidence-based decoding of one block: draw every masked position with its scores, commit the best.

        Step i of the block draws at offset (block's first step + i) whatever the other rows do, so a sequence's
        tokens do not depend on its batch even when the number of steps is decided on the way."""
        cfg, state, W = self.cfg, self.state, hi - lo
        by_schedule = cfg.threshold is None and cfg.entropy_bound is None
        n_steps = state.steps_per_block if by_schedule else W
        counts = commit_schedule((x[:, lo:hi] == state.mask_id).sum(1), n_steps)
        # the schedule says up front which steps commit anything (one read-back per block); the other rules learn
        # when the block is done from the tokens, once per step
        commits = (counts > 0).any(0).tolist() if by_schedule else None
        start = self.step
        for i in range(n_steps):
            self.step = start + i
            if by_schedule and not commits[i]:
                continue  # more steps than tokens, or the block is done: nothing commits here
            masked = x[:, lo:hi] == state.mask_id
            if not by_schedule and not bool(masked.any()):
                break
            bar.update(1)
            state.count_step(first, masked.any(1))
            t = masked.sum(1).double() / W  # the block's masked fraction, for time-conditioned denoisers
            logits = state.denoise(x, t, first)
            tokens, scores, _ = ops.sample_scored(state.view(logits, lo, hi), x[:, lo:hi], state.mask_id,
                                               offset=self._offset(self.DRAW), row_offset=first * W, **self._rng())
            del logits  # before the next call, so two outputs never coexist
            commit = choose_commits(scores, masked, cfg, counts[:, i] if by_schedule else None)
            x = x.clone()
            x[:, lo:hi] = torch.where(commit, tokens, x[:, lo:hi])
        self.step = start + n_steps
        return x


def commit_schedule(n_masked: torch.Tensor, steps: int) -> torch.Tensor:
    """LLaDA's schedule: each row's masked count split as evenly as possible over the steps, the larger shares
    first.  int64 [B, steps]."""
    base, extra = n_masked // steps, n_masked % steps
    return base[:, None] + (torch.arange(steps, device=n_masked.device)[None] < extra[:, None]).long()


def _ranks(score: torch.Tensor) -> torch.Tensor:
    """Rank of each entry in its row, highest score first, ties to the lower index."""
    order = torch.sort(score, dim=1, descending=True, stable=True).indices
    return torch.empty_like(order).scatter_(1, order, torch.arange(score.shape[1], device=score.device).expand_as(order))


def choose_commits(scores: torch.Tensor, masked: torch.Tensor, cfg, count: Optional[torch.Tensor]) -> torch.Tensor:
    """Which masked positions commit: the ``count`` best by the unmasking rule; every one with p_draw >=
    ``threshold`` (at least the best); or the EB-Sampler run of lowest entropies within ``entropy_bound``."""
    rank = _ranks(torch.where(masked, UNMASKING[cfg.unmasking](scores), float("-inf")))
    if count is not None:
        return masked & (rank < count[:, None])
    if cfg.threshold is not None:
        return masked & ((scores[0] >= cfg.threshold) | (rank == 0))
    entropy = torch.where(masked, scores[3], float("inf"))
    ordered = torch.sort(entropy, dim=1, stable=True).values
    # entropy of the run before each position, in entropy order (its own entropy is the run's largest); summed
    # exclusively, so a run ending exactly at the bound commits (DiffusionGemma keeps transformers' cumsum - value,
    # which rounds differently at that boundary)
    before = torch.cat([torch.zeros_like(ordered[:, :1]), torch.cumsum(ordered, 1)[:, :-1]], 1)
    n = ((before <= cfg.entropy_bound) & torch.isfinite(ordered)).sum(1).clamp(min=1)
    return masked & (_ranks(-entropy) < n[:, None])


@register_sampler
class FirstHittingSampler(Sampler):
    """Zheng et al.'s first-hitting sampler: one exactly drawn token per step, at the next unmasking time, block
    after block."""

    name = "first_hitting"
    TIME, POSITION, TOKEN = 0, 1, 2

    def steps(self) -> int:
        return sum(hi - lo for lo, hi in self.state.layout.blocks)

    def run_block(self, x, first, lo, hi, bar):
        state, B, dev = self.state, x.shape[0], x.device
        tau = torch.ones(B, dtype=torch.float64, device=dev)
        rows = torch.arange(B, device=dev)
        for _ in range(hi - lo):
            bar.update(1)
            masked = x[:, lo:hi] == state.mask_id
            n_masked = masked.sum(1)
            active = n_masked > 0
            state.count_step(first, active)
            if bool(active.any()):
                tau = torch.where(active, self.next_time(tau, n_masked, first), tau)
                col = lo + self.position(masked, n_masked, first)
                picked = state.at(state.denoise(x, tau, first), col[:, None])[:, 0]  # the output is freed here
                tok, _ = ops.categorical(picked, 1, offset=self._offset(self.TOKEN), exclude=state.mask_id,
                                         row_offset=first, precision=self.cfg.precision, **self._rng())
                x = x.clone()
                x[rows, col] = torch.where(active, tok[:, 0], x[rows, col])  # no mask indexing: no host sync
            self.step += 1
        return x

    def next_time(self, tau, n_masked, first):
        """The next unmasking time: alpha^-1(1 - u^(1/n) (1 - alpha(tau))) with n masked positions."""
        schedule = self.state.schedule
        u = ops.uniform(tau.shape, seed=self.cfg.seed, offset=self._offset(self.TIME), row_offset=first,
                        device=tau.device)
        a_next = 1.0 - u.pow(1.0 / n_masked.clamp(min=1).double()) * (1.0 - schedule.alpha(tau))
        return schedule.alpha_inv(a_next).clamp(0.0, 1.0)

    def position(self, masked, n_masked, first):
        """A uniformly chosen masked position per sequence (its column within the block)."""
        u = ops.uniform(n_masked.shape, seed=self.cfg.seed, offset=self._offset(self.POSITION), row_offset=first,
                        device=masked.device)
        rank = torch.minimum((u * n_masked.clamp(min=1).double()).long(), n_masked.clamp(min=1) - 1)
        return (masked & (masked.long().cumsum(1) == rank[:, None] + 1)).long().argmax(1)
