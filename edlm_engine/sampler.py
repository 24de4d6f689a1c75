"""``sample()``: resolve the models, build the initial tokens, run the batches through a sampler, collect stats.

The samplers themselves live in :mod:`edlm_engine.samplers`, the options in :class:`edlm_engine.SampleConfig`.
"""

from __future__ import annotations

import operator
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch

from .config import SampleConfig
from .models import CausalLMEnergy, as_denoiser, as_energy, check_vocabularies
from .samplers import SAMPLERS, SamplingRun, get_sampler
from .schedules import get_schedule

__all__ = ["sample", "SampleOutput", "resolve_models"]


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


def _count(name, value) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        value = operator.index(value)  # ints and numpy integers
    except TypeError:
        raise TypeError(f"{name} must be an int, got {value!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value}")
    return value


def _config(config: Optional[SampleConfig], overrides: Dict[str, Any]) -> SampleConfig:
    if config is not None and not isinstance(config, SampleConfig):
        raise TypeError(f"config must be a SampleConfig, got {type(config).__name__}")
    return (config or SampleConfig()).replace(**overrides)


def _device(model, cfg: SampleConfig) -> torch.device:
    if cfg.device is not None:
        return torch.device(cfg.device)
    if isinstance(model, torch.nn.Module):
        return next(model.parameters()).device
    return torch.device("cpu")


def resolve_models(model, energy, cfg: SampleConfig, device: torch.device):
    """The denoiser, the energy and the schedule that ``cfg`` asks for, checked against each other."""
    schedule = get_schedule(cfg.schedule, cfg.eps)
    dtype = getattr(torch, cfg.dtype) if cfg.dtype else None
    denoiser = as_denoiser(model, mask_id=cfg.mask_id, schedule=schedule, trust_remote_code=cfg.trust_remote_code,
                           device=device if isinstance(model, (str, torch.nn.Module)) else None,
                           dtype=dtype if isinstance(model, str) else None)
    energy = as_energy(energy, positions=cfg.energy_positions, trust_remote_code=cfg.trust_remote_code,
                       device=device if isinstance(energy, (str, torch.nn.Module)) else None,
                       dtype=dtype if isinstance(energy, str) else None)
    if isinstance(energy, CausalLMEnergy):
        energy.mask_id = denoiser.mask_id
    if denoiser.time_conditioned and not schedule.finite_at_one:
        raise ValueError(f"schedule={cfg.schedule!r} has sigma(1) = inf, which the time-conditioned denoiser "
                         f"{denoiser.name} cannot take (its logits would be NaN); use schedule='loglinear' (eps > 0)")
    check_vocabularies(denoiser, energy, allow_mismatch=cfg.allow_vocab_mismatch)
    return denoiser, energy, schedule


def _sequence_length(denoiser, energy, cfg: SampleConfig) -> int:
    seq_len = cfg.seq_len
    if cfg.template is not None:
        seq_len = len(cfg.template[0] if isinstance(cfg.template[0], list) else cfg.template)
    if seq_len is None:
        seq_len = denoiser.max_positions
        if seq_len is None:
            raise ValueError("seq_len is needed: the denoiser does not say how many positions it takes")
    if denoiser.max_positions is not None and seq_len > denoiser.max_positions:
        raise ValueError(f"seq_len {seq_len} exceeds the denoiser's {denoiser.max_positions} positions")
    if isinstance(energy, CausalLMEnergy) and energy.max_positions is not None:
        need = seq_len + (energy.bos_id is not None)
        if need > energy.max_positions:
            raise ValueError(f"seq_len {seq_len} (+BOS) exceeds the energy model's {energy.max_positions} positions")
    return seq_len


def _token_rows(name: str, rows, n: int, denoiser, device) -> torch.Tensor:
    """A [P] or [n, P] list of token ids as an int64 [n, P] tensor, each id a token the denoiser can read."""
    t = torch.tensor(rows, dtype=torch.int64, device=device)
    if t.dim() == 1:
        t = t.unsqueeze(0).expand(n, -1)
    if t.shape[0] != n:
        raise ValueError(f"{name} must have shape [P] or [n, P] with n = {n}, got {tuple(t.shape)}")
    V = denoiser.vocab_size
    if V is not None and t.numel() and int(t.max()) >= V:
        raise ValueError(f"{name} holds token id {int(t.max())}, outside the denoiser's vocabulary [0, {V})")
    return t


def _initial_tokens(denoiser, cfg: SampleConfig, n: int, seq_len: int, device) -> torch.Tensor:
    """Mask ids where something is generated; the template and the prefix where they say."""
    if cfg.template is not None:
        x = _token_rows("template", cfg.template, n, denoiser, device).clone()
    else:
        x = torch.full((n, seq_len), denoiser.mask_id, dtype=torch.int64, device=device)
    if cfg.prefix is not None:
        prefix = _token_rows("prefix", cfg.prefix, n, denoiser, device)
        if prefix.shape[1] > seq_len:
            raise ValueError(f"prefix of length {prefix.shape[1]} is longer than seq_len {seq_len}")
        x[:, : prefix.shape[1]] = prefix
    return x


def _run_batches(strategy, x_init: torch.Tensor, cfg: SampleConfig) -> torch.Tensor:
    """The batches of ``cfg.batch_size`` sequences, one after another, under one progress bar."""
    from tqdm.auto import tqdm

    n = x_init.shape[0]
    size = cfg.batch_size or n
    out = []
    with tqdm(total=strategy.steps() * ((n + size - 1) // size), disable=not cfg.progress,
              desc=f"edlm {cfg.sampler}", unit="step") as bar:
        for i0 in range(0, n, size):
            out.append(strategy.run(x_init[i0 : i0 + size], cfg.first_index + i0, bar))
    return torch.cat(out)


def _collect_stats(state: SamplingRun, strategy, n: int, load_s: float, sample_s: float) -> Dict[str, Any]:
    stats = dict(state.stats)
    stats.update(
        seconds=sample_s,
        load_seconds=load_s,
        tokens_per_second=n * state.seq_len / sample_s if sample_s > 0 else float("inf"),
        mean_ess=float(torch.cat(state.ess).mean()) if state.ess else None,
        sampler=strategy.name,
        steps=strategy.steps(),
        n=n,
        seq_len=state.seq_len,
    )
    return stats


def sample(model, energy=None, n: int = 1, *, config: Optional[SampleConfig] = None, **overrides) -> SampleOutput:
    """Draw ``n`` sequences from a masked diffusion model, optionally with EDLM energy rescoring.

    Parameters
    ----------
    model : transformers model, str or callable
        The denoiser: a masked LM (BERT-like, MDLM-style with ``timesteps``, LLaDA-like via ``AutoModel``, or a
        ``*ForCausalLM`` checkpoint saved with ``config.is_causal = False``), its name or local path, or a callable
        ``(x_t [B, L], t [B]) -> logits [B, L, V]``.
    energy : None, transformers causal LM, str, Energy or callable
        None samples plain masked diffusion.  A causal LM (or name/path) gives the EDLM-AR energy
        ``-log p_AR(x0) + log q(x0 | x_t)``; see :class:`edlm_engine.LogLikelihoodEnergy` for any likelihood.
    n : int
        Number of sequences.
    config : SampleConfig, optional
        Every other option (see :class:`edlm_engine.SampleConfig` for each field and its default).
    **overrides
        Fields of ``SampleConfig`` given directly, e.g. ``steps=64, seed=1``; they take precedence over ``config``.
        An unknown name is a ``TypeError`` naming it.

    Returns
    -------
    SampleOutput
        ``tokens`` int64 [n, seq_len], ``text`` (when the denoiser has a tokenizer) and ``stats``:
        denoiser_calls, energy_calls, candidates_scored, seconds (sampling), load_seconds (resolving the models),
        tokens_per_second, mean_ess, sampler, steps, n, seq_len.

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
    cfg = _config(config, overrides)
    n = _count("n", n)
    started = time.perf_counter()
    device = _device(model, cfg)
    denoiser, energy, schedule = resolve_models(model, energy, cfg, device)
    strategy_cls = get_sampler(cfg.sampler)
    if energy is not None and not strategy_cls.supports_energy:
        raise ValueError(f"energy rescoring does not run with sampler={cfg.sampler!r}; samplers that take an energy: "
                         f"{[name for name, cls in SAMPLERS.items() if cls.supports_energy]}")
    seq_len = _sequence_length(denoiser, energy, cfg)
    x_init = _initial_tokens(denoiser, cfg, n, seq_len, device)
    loaded = time.perf_counter()
    state = SamplingRun(denoiser, energy, schedule, seq_len, cfg)
    strategy = strategy_cls(state)
    tokens = _run_batches(strategy, x_init, cfg)
    stats = _collect_stats(state, strategy, n, loaded - started, time.perf_counter() - loaded)
    text = None
    if denoiser.tokenizer is not None:
        text = denoiser.tokenizer.batch_decode(tokens.cpu(), skip_special_tokens=False)
    return SampleOutput(tokens=tokens, text=text, stats=stats)
