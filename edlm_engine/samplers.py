"""Sampling strategies: one class per sampler behind one interface, found by name in a registry.

A strategy turns a batch of initial sequences (mask ids where something is to be generated) into samples. It
gets a :class:`SamplingRun` (the denoiser, the energy, the schedule, the config and the run's statistics) and
draws its randomness from the ops' Philox stream at its own named offsets, so that sample ``i`` depends only on
``(seed, i)`` whatever the batch.  Add a sampler by subclassing :class:`Sampler` and decorating it with
:func:`register_sampler`; ``SampleConfig.sampler`` then accepts its name.
"""

from __future__ import annotations

from typing import Dict, List, Type

import torch

from . import ops

__all__ = ["Sampler", "SamplingRun", "AncestralSampler", "FirstHittingSampler", "SAMPLERS", "register_sampler",
           "get_sampler"]

SAMPLERS: Dict[str, Type["Sampler"]] = {}


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


class SamplingRun:
    """What the batches of one ``sample()`` call share: models, schedule, config and statistics."""

    def __init__(self, denoiser, energy, schedule, seq_len: int, config):
        self.denoiser, self.energy, self.schedule = denoiser, energy, schedule
        self.seq_len, self.config = seq_len, config
        self.mask_id = denoiser.mask_id
        self.stats = dict(denoiser_calls=0, energy_calls=0, candidates_scored=0)
        self.ess: List[torch.Tensor] = []  # per scored sequence, kept on the device until the end

    def denoise(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        logits = self.denoiser(x, t)
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

    def fill(self, x: torch.Tensor, first: int) -> torch.Tensor:
        """Final step: whatever is still masked takes the denoiser's argmax."""
        if bool((x == self.mask_id).any()):
            logits = self.denoise(x, torch.zeros(x.shape[0], dtype=torch.float64, device=x.device))
            x = ops.sample_masked(logits, x, self.mask_id, 1.0, seed=self.config.seed, temperature=0.0,
                                  row_offset=first * self.seq_len)
        return x


class Sampler:
    """One sampling strategy.

    Subclasses set ``name``, ``supports_energy`` and their RNG offsets, and implement :meth:`steps` and
    :meth:`run`.  Offsets of step ``j`` are ``STRIDE * j + OFFSET``, one per random stream a step uses.
    """

    name = ""
    supports_energy = False
    STRIDE = 4

    def __init__(self, state: SamplingRun):
        self.state = state
        self.cfg = state.config

    def steps(self) -> int:
        """Progress-bar units per batch."""
        raise NotImplementedError

    def run(self, x: torch.Tensor, first: int, bar) -> torch.Tensor:
        """Sample the batch ``x`` whose first sequence has global index ``first``."""
        raise NotImplementedError

    def _rng(self):
        return dict(seed=self.cfg.seed, temperature=self.cfg.temperature, precision=self.cfg.precision)


@register_sampler
class AncestralSampler(Sampler):
    """MDLM's ancestral sampler from t = 1 to 0, with EDLM importance sampling inside ``is_window``."""

    name = "ancestral"
    supports_energy = True
    CANDIDATES, RESAMPLE, REVEAL = 0, 1, 2

    def steps(self) -> int:
        return self.cfg.steps

    def run(self, x, first, bar):
        cfg, state, B, L = self.cfg, self.state, x.shape[0], self.state.seq_len
        times = torch.linspace(1.0, 0.0, cfg.steps + 1, dtype=torch.float64)
        lo, hi = cfg.is_window
        reuse = cfg.cache and not state.denoiser.time_conditioned
        logits, changed_any = None, True
        x0_star, star_ok = None, torch.zeros(B, dtype=torch.bool, device=x.device)
        for step in range(cfg.steps):
            bar.update(1)
            masked = x == state.mask_id
            if not bool(masked.any()):
                continue
            t, s = float(times[step]), float(times[step + 1])
            if logits is None or changed_any or not reuse:
                logits = state.denoise(x, torch.full((B,), t, dtype=torch.float64, device=x.device))
            x_prev = x
            if state.energy is not None and lo <= t <= hi:
                refresh = ~star_ok & masked.any(1)  # a sequence with nothing masked needs no x0*
                if bool(refresh.any()):
                    fresh = self.edlm_candidate(logits, x, first, step, refresh)
                    x0_star = fresh if x0_star is None else torch.where(refresh[:, None], fresh, x0_star)
                x = self.reveal(x, x0_star, masked, state.schedule.p_unmask(t, s), first, step)
                star_ok[:] = reuse  # the reference keeps revealing from x0* while x_t does not change
            else:
                x = ops.sample_masked(logits, x, state.mask_id, state.schedule.p_unmask(t, s),
                                      offset=self.STRIDE * step + self.REVEAL, row_offset=first * L, **self._rng())
                star_ok[:] = False
            changed = (x != x_prev).any(1)
            star_ok &= ~changed
            changed_any = bool(changed.any())
        return state.fill(x, first)

    def reveal(self, x, x0_star, masked, p_unmask, first, step):
        """Each masked position takes x0*'s token with probability p_unmask."""
        u = ops.uniform(x.shape, seed=self.cfg.seed, offset=self.STRIDE * step + self.REVEAL,
                        row_offset=first * self.state.seq_len, device=x.device)
        return torch.where(masked & (u < p_unmask), x0_star, x)

    def edlm_candidate(self, logits, x, first, step, refresh):
        """A resampled x0* for every sequence; only rows in ``refresh`` are scored and their x0* used.

        Candidates and resampling draws cover the whole batch so every sequence keeps the randomness it has in
        any batch split; the energy, the expensive part, runs on the refreshing rows alone.
        """
        state, B, L, k = self.state, x.shape[0], self.state.seq_len, self.cfg.is_size
        cands, log_q = ops.sample_candidates(logits, x, state.mask_id, k, offset=self.STRIDE * step + self.CANDIDATES,
                                             row_offset=first * L, **self._rng())
        rows = refresh.nonzero().squeeze(1)
        b = rows.numel()
        E = torch.zeros(B, k, dtype=torch.float64, device=x.device)
        E[rows] = state.energy(cands[:, rows].reshape(k * b, L), x[rows].repeat(k, 1),
                             log_q[:, rows].reshape(k * b)).to(E.device).reshape(k, b).T
        state.stats["energy_calls"] += 1
        state.stats["candidates_scored"] += k * b
        idx, ess = ops.importance_resample(E, seed=self.cfg.seed, offset=self.STRIDE * step + self.RESAMPLE,
                                           temperature=self.cfg.is_temperature, row_offset=first)
        state.ess.append(ess[rows])
        return cands[idx, torch.arange(B, device=x.device)]


@register_sampler
class FirstHittingSampler(Sampler):
    """Zheng et al.'s first-hitting sampler: one exactly drawn token per step, at the next unmasking time."""

    name = "first_hitting"
    TIME, POSITION, TOKEN = 0, 1, 2

    def steps(self) -> int:
        return self.state.seq_len

    def run(self, x, first, bar):
        state, B, dev = self.state, x.shape[0], x.device
        tau = torch.ones(B, dtype=torch.float64, device=dev)
        rows = torch.arange(B, device=dev)
        for step in range(state.seq_len):
            bar.update(1)
            masked = x == state.mask_id
            n_masked = masked.sum(1)
            active = n_masked > 0
            if not bool(active.any()):
                continue
            tau = torch.where(active, self.next_time(tau, n_masked, first, step), tau)
            logits = state.denoise(x, tau)
            pos = self.position(masked, n_masked, first, step)
            tok, _ = ops.categorical(logits[rows, pos], 1, offset=self.STRIDE * step + self.TOKEN,
                                     exclude=state.mask_id, row_offset=first, **self._rng())
            x = x.clone()
            x[rows[active], pos[active]] = tok[active, 0]
        return state.fill(x, first)

    def next_time(self, tau, n_masked, first, step):
        """The next unmasking time: alpha^-1(1 - u^(1/n) (1 - alpha(tau))) with n masked positions."""
        schedule = self.state.schedule
        u = ops.uniform(tau.shape, seed=self.cfg.seed, offset=self.STRIDE * step + self.TIME, row_offset=first,
                        device=tau.device)
        a_next = 1.0 - u.pow(1.0 / n_masked.clamp(min=1).double()) * (1.0 - schedule.alpha(tau))
        return schedule.alpha_inv(a_next).clamp(0.0, 1.0)

    def position(self, masked, n_masked, first, step):
        """A uniformly chosen masked position per sequence."""
        u = ops.uniform(n_masked.shape, seed=self.cfg.seed, offset=self.STRIDE * step + self.POSITION,
                        row_offset=first, device=masked.device)
        rank = torch.minimum((u * n_masked.clamp(min=1).double()).long(), n_masked.clamp(min=1) - 1)
        return (masked & (masked.long().cumsum(1) == rank[:, None] + 1)).long().argmax(1)
