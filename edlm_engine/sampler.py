"""The sampling engine: ancestral and first-hitting masked diffusion, with EDLM importance sampling."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

import torch

from . import ops
from .models import CausalLMEnergy, Denoiser, as_denoiser, as_energy
from .schedules import get_schedule

__all__ = ["sample", "SampleOutput", "SAMPLERS"]

SAMPLERS = ("ancestral", "first_hitting")
# Offsets of one step's random streams: candidates, resampling, reveal / unmask.  Steps are 4 apart.
_CAND, _RESAMPLE, _REVEAL, _STRIDE = 0, 1, 2, 4


@dataclass
class SampleOutput:
    """What :func:`sample` returns.

    Attributes
    ----------
    tokens : int64 Tensor [n, seq_len]
    text : list of str or None
        Decoded tokens when the denoiser has a tokenizer.
    stats : dict
        denoiser_calls, energy_calls, candidates_scored, seconds, tokens_per_second, mean_ess, and the settings.
    """

    tokens: torch.Tensor
    text: Optional[List[str]]
    stats: Dict[str, Any] = field(default_factory=dict)


def _positive_int(name, value, low=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def _rows(name, value, n, device):
    """A [P] or [n, P] int64 tensor of token rows, expanded to [n, P]."""
    t = torch.as_tensor(value, dtype=torch.int64, device=device) if not isinstance(value, torch.Tensor) else value
    if t.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"{name} must hold integer token ids, got {t.dtype}")
    t = t.to(device=device, dtype=torch.int64)
    if t.dim() == 1:
        t = t.unsqueeze(0).expand(n, -1)
    if t.dim() != 2 or t.shape[0] != n:
        raise ValueError(f"{name} must have shape [P] or [n, P] with n = {n}, got {tuple(t.shape)}")
    return t


class _Run:
    """State shared by the batches of one :func:`sample` call."""

    def __init__(self, denoiser: Denoiser, energy, schedule, L, opts):
        self.d, self.e, self.schedule, self.L, self.o = denoiser, energy, schedule, L, opts
        self.mask = denoiser.mask_id
        self.stats = dict(denoiser_calls=0, energy_calls=0, candidates_scored=0)
        self.ess: List[torch.Tensor] = []
        self.checked_width = False

    def denoise(self, x, t):
        logits = self.d(x, t)
        self.stats["denoiser_calls"] += 1
        if not self.checked_width:
            self.checked_width = True
            V = logits.shape[-1]
            need = V - 1 if self.mask == V - 1 else V
            if self.e is not None and self.e.vocab_size is not None and self.e.vocab_size < need:
                raise ValueError(
                    f"energy vocabulary ({self.e.vocab_size} tokens) cannot cover the denoiser's token ids "
                    f"(logits over {V} ids, mask id {self.mask}): the candidates would be unscorable"
                )
        return logits

    def ancestral(self, x, i0, bar):
        o, B, L, mask = self.o, x.shape[0], self.L, self.mask
        ts = torch.linspace(1.0, 0.0, o["steps"] + 1, dtype=torch.float64)
        lo, hi = o["is_window"]
        reuse_logits = o["cache"] and not self.d.time_conditioned
        logits, changed_any = None, True
        x0_star, star_ok = None, torch.zeros(B, dtype=torch.bool, device=x.device)
        for k in range(o["steps"]):
            bar.update(1)
            masked = x == mask
            if not bool(masked.any()):
                continue
            t, s = float(ts[k]), float(ts[k + 1])
            p = self.schedule.p_unmask(t, s)
            if logits is None or changed_any or not reuse_logits:
                logits = self.denoise(x, torch.full((B,), t, dtype=torch.float64, device=x.device))
            rng = dict(seed=o["seed"], temperature=o["temperature"], precision=o["precision"])
            x_prev = x
            if self.e is not None and lo <= t <= hi:
                refresh = ~star_ok & masked.any(1)  # a sequence with nothing masked needs no x0*
                if bool(refresh.any()):
                    new_star = self.edlm_candidate(logits, x, i0, k, rng, refresh)
                    x0_star = new_star if x0_star is None else torch.where(refresh[:, None], new_star, x0_star)
                u = ops.uniform((B, L), seed=o["seed"], offset=_STRIDE * k + _REVEAL, row_offset=i0 * L, device=x.device)
                x = torch.where(masked & (u < p), x0_star, x)
                star_ok[:] = reuse_logits  # the reference keeps revealing from x0* while x_t does not change
            else:
                x = ops.sample_masked(logits, x, mask, p, offset=_STRIDE * k + _REVEAL, row_offset=i0 * L, **rng)
                star_ok[:] = False
            changed = (x != x_prev).any(1)
            star_ok &= ~changed
            changed_any = bool(changed.any())
        return self.fill(x, i0)

    def edlm_candidate(self, logits, x, i0, k, rng, refresh):
        """A resampled x0* for every sequence; only rows in `refresh` are scored and their x0* used.

        Candidates and resampling draws cover the whole batch so every sequence keeps the randomness it has in
        any batch split; the energy, the expensive part, runs on the refreshing rows alone.
        """
        o, B, L = self.o, x.shape[0], self.L
        kk = o["is_size"]
        cands, log_q = ops.sample_candidates(logits, x, self.mask, kk, offset=_STRIDE * k + _CAND, row_offset=i0 * L,
                                             **rng)
        rows = refresh.nonzero().squeeze(1)
        b = rows.numel()
        E = torch.zeros(B, kk, dtype=torch.float64, device=x.device)
        E[rows] = self.e(cands[:, rows].reshape(kk * b, L), x[rows].repeat(kk, 1),
                         log_q[:, rows].reshape(kk * b)).to(E.device).reshape(kk, b).T
        self.stats["energy_calls"] += 1
        self.stats["candidates_scored"] += kk * b
        idx, ess = ops.importance_resample(E, seed=o["seed"], offset=_STRIDE * k + _RESAMPLE,
                                           temperature=o["is_temperature"], row_offset=i0)
        self.ess.append(ess[rows])  # stays on the device; read once, at the end
        return cands[idx, torch.arange(B, device=x.device)]

    def first_hitting(self, x, i0, bar):
        o, B, L, mask = self.o, x.shape[0], self.L, self.mask
        dev = x.device
        tau = torch.ones(B, dtype=torch.float64, device=dev)
        rows = torch.arange(B, device=dev)
        for j in range(L):
            bar.update(1)
            masked = x == mask
            n_masked = masked.sum(1)
            active = n_masked > 0
            if not bool(active.any()):
                continue
            u = ops.uniform((B,), seed=o["seed"], offset=_STRIDE * j + _CAND, row_offset=i0, device=dev)
            nm = n_masked.clamp(min=1).double()
            a_next = 1.0 - u.pow(1.0 / nm) * (1.0 - self.schedule.alpha(tau))
            tau = torch.where(active, self.schedule.alpha_inv(a_next).clamp(0.0, 1.0), tau)
            logits = self.denoise(x, tau)
            u_pos = ops.uniform((B,), seed=o["seed"], offset=_STRIDE * j + _RESAMPLE, row_offset=i0, device=dev)
            rank = torch.minimum((u_pos * nm).long(), n_masked.clamp(min=1) - 1)
            pos = (masked & (masked.long().cumsum(1) == rank[:, None] + 1)).long().argmax(1)
            tok, _ = ops.categorical(logits[rows, pos], 1, seed=o["seed"], offset=_STRIDE * j + _REVEAL,
                                     temperature=o["temperature"], exclude=[mask], precision=o["precision"],
                                     row_offset=i0)
            x = x.clone()
            x[rows[active], pos[active]] = tok[active, 0]
        return self.fill(x, i0)

    def fill(self, x, i0):
        """Final step: whatever is still masked takes the denoiser's argmax."""
        if bool((x == self.mask).any()):
            logits = self.denoise(x, torch.zeros(x.shape[0], dtype=torch.float64, device=x.device))
            x = ops.sample_masked(logits, x, self.mask, 1.0, seed=self.o["seed"], temperature=0.0, row_offset=i0 * self.L)
        return x


def sample(
    model,
    energy=None,
    n: int = 1,
    *,
    seq_len: Optional[int] = None,
    steps: int = 256,
    sampler: str = "ancestral",
    cache: bool = True,
    is_size: int = 2,
    is_window: Sequence[float] = (0.8, 1.0),
    is_temperature: float = 1.0,
    energy_positions: str = "all",
    temperature: float = 1.0,
    precision: str = "fp64",
    prefix=None,
    template=None,
    mask_id: Optional[int] = None,
    batch_size: Optional[int] = None,
    seed: int = 0,
    device: Optional[Union[str, torch.device]] = None,
    progress: bool = False,
    schedule=None,
    trust_remote_code: bool = False,
    first_index: int = 0,
) -> SampleOutput:
    """Draw ``n`` sequences from a masked diffusion model, optionally with EDLM energy rescoring.

    Parameters
    ----------
    model : transformers model, str or callable
        The denoiser: a masked LM (BERT-like, MDLM-style with ``timesteps``, LLaDA-like via ``AutoModel``), its
        name or local path, or a callable ``(x_t [B, L], t [B]) -> logits [B, L, V]``.
    energy : None, transformers causal LM, str, Energy or callable
        None samples plain masked diffusion.  A causal LM (or name/path) gives the EDLM-AR energy
        ``-log p_AR(x0) + log q(x0 | x_t)``; see :class:`edlm_engine.LogLikelihoodEnergy` for any likelihood.
    n : int
        Number of sequences.
    seq_len : int, optional
        Defaults to the template's length, else the denoiser's maximum positions.
    steps : int
        Ancestral steps from t = 1 to t = 0 (first_hitting takes one step per masked position instead).
    sampler : {"ancestral", "first_hitting"}
    cache : bool
        Reuse the denoiser output while no sequence changed (time-agnostic denoisers only; exact).
    is_size, is_window, is_temperature
        EDLM: candidates per sequence, the interval of t where importance sampling runs, weight temperature.
    energy_positions : {"all", "masked"}
        For causal-LM energies: score every position (exact) or only positions masked in x_t.
    temperature : float
        Of the denoiser's categorical; 0 means argmax.
    precision : {"fp64", "fp32-gumbel"}
        "fp32-gumbel" reproduces the reference code's truncated sampler, for comparisons.
    prefix : sequence of int or Tensor [P] / [n, P], optional
        Fixed leading tokens.
    template : sequence of int or Tensor [L] / [n, L], optional
        Infilling: generate only where it holds the mask id.
    mask_id : int, optional
        Overrides the tokenizer's / config's mask id.
    batch_size : int, optional
        Sequences per batch (default: all n).  Sample i depends only on (seed, i), not on the batch size.
    seed : int
    device : str or torch.device, optional
        Defaults to the model's device (CPU for callables).
    progress : bool
        Show a tqdm progress bar.
    first_index : int
        Global index of this call's first sample: sample ``i`` here is sample ``first_index + i`` of a larger run,
        so runs can be resumed or split across processes and still give the same sequences.

    Returns
    -------
    SampleOutput

    Examples
    --------
    >>> import torch, edlm_engine
    >>> def denoiser(x_t, t):  # a toy time-agnostic denoiser over 5 tokens; id 5 is the mask
    ...     return torch.log(torch.tensor([0.4, 0.3, 0.1, 0.1, 0.1, 0.0])).expand(*x_t.shape, 6)
    >>> denoiser.time_agnostic = True
    >>> out = edlm_engine.sample(denoiser, n=3, seq_len=8, steps=4, mask_id=5, seed=1)
    >>> out.tokens.shape, bool((out.tokens != 5).all())
    (torch.Size([3, 8]), True)
    """
    started = time.perf_counter()
    n = _positive_int("n", n)
    steps = _positive_int("steps", steps)
    is_size = _positive_int("is_size", is_size)
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    try:
        lo, hi = (float(v) for v in is_window)
    except (TypeError, ValueError):
        raise ValueError(f"is_window must be a pair (lo, hi), got {is_window!r}") from None
    if not (0.0 <= lo <= hi <= 1.0):
        raise ValueError(f"is_window must satisfy 0 <= lo <= hi <= 1, got {is_window!r}")
    for name, v in (("is_temperature", is_temperature), ("temperature", temperature)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0.0 <= v < float("inf")):
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    if energy_positions not in ("all", "masked"):
        raise ValueError(f"energy_positions must be 'all' or 'masked', got {energy_positions!r}")
    if precision not in ops.PRECISIONS:
        raise ValueError(f"precision must be one of {ops.PRECISIONS}, got {precision!r}")
    if batch_size is not None:
        batch_size = _positive_int("batch_size", batch_size)
    ops._check_int("seed", seed, 0, 2**63)
    ops._check_int("first_index", first_index, 0, 2**40)

    schedule = get_schedule(schedule)
    if device is None and isinstance(model, torch.nn.Module):
        device = next(model.parameters()).device
    device = torch.device(device if device is not None else "cpu")
    denoiser = as_denoiser(model, mask_id=mask_id, schedule=schedule, trust_remote_code=trust_remote_code,
                           device=device if isinstance(model, (str, torch.nn.Module)) else None)
    energy = as_energy(energy, positions=energy_positions, trust_remote_code=trust_remote_code,
                       device=device if isinstance(energy, (str, torch.nn.Module)) else None)
    if isinstance(energy, CausalLMEnergy):
        energy.mask_id = denoiser.mask_id
    if energy is not None and sampler != "ancestral":
        raise ValueError("energy rescoring runs with sampler='ancestral'; first_hitting unmasks one token per step")
    mask = denoiser.mask_id

    if template is not None:
        template = _rows("template", template, n, device)
        if seq_len is not None and template.shape[1] != seq_len:
            raise ValueError(f"template has length {template.shape[1]} but seq_len is {seq_len}")
        seq_len = template.shape[1]
    if seq_len is None:
        seq_len = denoiser.max_positions
        if seq_len is None:
            raise ValueError("seq_len is needed: the denoiser does not say how many positions it takes")
    seq_len = _positive_int("seq_len", seq_len)
    if denoiser.max_positions is not None and seq_len > denoiser.max_positions:
        raise ValueError(f"seq_len {seq_len} exceeds the denoiser's {denoiser.max_positions} positions")
    if isinstance(energy, CausalLMEnergy) and energy.max_positions is not None:
        need = seq_len + (energy.bos_id is not None)
        if need > energy.max_positions:
            raise ValueError(f"seq_len {seq_len} (+BOS) exceeds the energy model's {energy.max_positions} positions")
    x_init = torch.full((n, seq_len), mask, dtype=torch.int64, device=device) if template is None else template.clone()
    if prefix is not None:
        prefix = _rows("prefix", prefix, n, device)
        if prefix.shape[1] > seq_len:
            raise ValueError(f"prefix of length {prefix.shape[1]} is longer than seq_len {seq_len}")
        x_init[:, : prefix.shape[1]] = prefix

    opts = dict(steps=steps, cache=bool(cache), is_size=is_size, is_window=(lo, hi), is_temperature=float(is_temperature),
                temperature=float(temperature), precision=precision, seed=seed)
    run = _Run(denoiser, energy, schedule, seq_len, opts)
    bs = batch_size or n
    from tqdm.auto import tqdm

    per_batch = steps if sampler == "ancestral" else seq_len
    out = []
    with tqdm(total=per_batch * ((n + bs - 1) // bs), disable=not progress, desc=f"edlm {sampler}", unit="step") as bar:
        for i0 in range(0, n, bs):
            x = x_init[i0 : i0 + bs]
            g0 = first_index + i0
            x = run.ancestral(x, g0, bar) if sampler == "ancestral" else run.first_hitting(x, g0, bar)
            out.append(x)
    tokens = torch.cat(out)
    seconds = time.perf_counter() - started
    stats = dict(run.stats)
    stats.update(
        seconds=seconds,
        tokens_per_second=n * seq_len / seconds if seconds > 0 else float("inf"),
        mean_ess=float(torch.cat(run.ess).mean()) if run.ess else None,
        sampler=sampler,
        steps=steps if sampler == "ancestral" else seq_len,
        n=n,
        seq_len=seq_len,
    )
    text = None
    if denoiser.tokenizer is not None:
        text = denoiser.tokenizer.batch_decode(tokens.cpu(), skip_special_tokens=False)
    return SampleOutput(tokens=tokens, text=text, stats=stats)
