"""``sample()``: resolve the models, build the initial tokens, run the batches through a sampler, collect stats.

The samplers themselves live in :mod:`edlm_engine.samplers`, the options in :class:`edlm_engine.SampleConfig`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch

from .config import SampleConfig
from .layout import build_layout, end_of_sequence
from .models import AutoregressiveEnergy, as_denoiser, as_energy, check_vocabularies
from .ops import _check_int
from .samplers import SamplingRun, get_sampler
from .schedules import get_schedule

__all__ = ["sample", "SampleOutput", "resolve_models"]


@dataclass
class SampleOutput:
    """What :func:`sample` returns.

    Attributes
    ----------
    tokens : int64 Tensor [n, seq_len]
        With a prompt: the (left-padded) prompt, then the generation.
    text : list of str or None
        Decoded tokens when the denoiser has a tokenizer; with a prompt, the generation alone, special tokens
        stripped.
    stats : dict
        What :func:`sample` lists under Returns.
    """

    tokens: torch.Tensor
    text: Optional[List[str]]
    stats: Dict[str, Any] = field(default_factory=dict)


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
    if isinstance(energy, AutoregressiveEnergy):
        energy.mask_id = denoiser.mask_id
    if denoiser.time_conditioned and not schedule.finite_at_one:
        raise ValueError(f"schedule={cfg.schedule!r} has sigma(1) = inf, which the time-conditioned denoiser "
                         f"{denoiser.name} cannot take (its logits would be NaN); use schedule='loglinear' (eps > 0)")
    check_vocabularies(denoiser, energy, allow_mismatch=cfg.allow_vocab_mismatch)
    return denoiser, energy, schedule


def _shift(denoiser, cfg: SampleConfig, layout) -> bool:
    """Whether output i predicts position i + 1 (Dream); then position 0 cannot be generated."""
    shift = denoiser.shifted if cfg.logits_shift is None else cfg.logits_shift
    if shift and layout.gen_start == 0:
        raise ValueError("logits_shift: the denoiser's output i predicts position i + 1, so the first position must "
                         "be given (a prompt or a prefix)")
    return shift


def _decode(denoiser, tokens: torch.Tensor, cfg: SampleConfig, layout):
    """Text of the samples: after a prompt, the generation alone with special tokens stripped."""
    if denoiser.tokenizer is None:
        return None
    if cfg.prompt is None:
        return denoiser.tokenizer.batch_decode(tokens.cpu(), skip_special_tokens=False)
    return denoiser.tokenizer.batch_decode(tokens[:, layout.gen_start :].cpu(), skip_special_tokens=True)


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


def _speculative_stats(totals) -> Dict[str, Any]:
    if not totals:
        return {}
    n = max(totals["sequences"], 1)
    return dict(denoiser_calls_per_sequence=totals["calls"] / n, ar_calls_per_sequence=totals["calls"] / n,
                ar_tokens_per_sequence=totals["ar_tokens"] / n,
                acceptance_rate=totals["accepted"] / max(totals["drafted"], 1))


def _collect_stats(state: SamplingRun, strategy, n: int, load_s: float, sample_s: float) -> Dict[str, Any]:
    stats = dict(state.stats)
    stats.update(
        seconds=sample_s,
        load_seconds=load_s,
        tokens_per_second=n * state.seq_len / sample_s if sample_s > 0 else float("inf"),
        mean_ess=float(torch.cat(state.ess).nanmean()) if state.ess else None,  # NaN: a finished sequence's round
        steps_per_sequence=float(torch.cat(list(state.active_steps.values())).double().mean())
        if state.active_steps else 0.0,
        **_speculative_stats(state.stats.pop("speculative", None)),
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
        tokens_per_second, mean_ess, steps_per_sequence (the steps in which a sequence still had something to
        decode, averaged: what threshold and entropy-bound decoding save), sampler, steps, n, seq_len.

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
    n = _check_int("n", n, 1)
    started = time.perf_counter()
    device = _device(model, cfg)
    denoiser, energy, schedule = resolve_models(model, energy, cfg, device)
    strategy_cls = get_sampler(cfg.sampler)
    layout = build_layout(denoiser, energy, cfg, n, device)
    state = SamplingRun(denoiser, energy, schedule, cfg, layout, shift=_shift(denoiser, cfg, layout),
                        eos_id=end_of_sequence(denoiser, cfg))
    strategy = strategy_cls(state)
    strategy.check()
    loaded = time.perf_counter()
    tokens = _run_batches(strategy, layout.x_init, cfg)
    stats = _collect_stats(state, strategy, n, loaded - started, time.perf_counter() - loaded)
    return SampleOutput(tokens=tokens, text=_decode(denoiser, tokens, cfg, layout), stats=stats)
