"""Plain-PyTorch baselines for the sampling-op benchmarks.

Each baseline is what a user of MDLM/EDLM-style code would run without edlm-engine, written the way the
reference code bases write it, so that the comparison measures the engine and not a strawman.

``gumbel_fp32_step``
    The MDLM/EDLM reference sampler: ``argmax(probs / (1e-10 - log(rand + 1e-10)))`` in float32 over the
    whole ``[k * B, L, V]`` tensor.  EDLM draws its ``k`` importance-sampling candidates by repeating the
    whole logits tensor ``k`` times, so the baseline does too.  Its 24-bit uniforms cap the Gumbel noise and
    truncate the tail (docs/design.md, section 2); it is fast, not exact.
``gumbel_fp64_step``
    The same sampler in float64, the LLaDA-style fix for that truncation: the whole repeated tensor is cast
    to float64 before the softmax and the noise.
``multinomial_step``
    ``torch.multinomial`` with replacement over ``softmax(logits.float())`` viewed as ``[B * L, V]``: PyTorch's
    own inverse-CDF sampler, the fastest plain-PyTorch way to draw ``k`` tokens per row (float32 cumsum).
``masked_step_reference``
    One MDLM ancestral reverse step as the reference writes it: every position takes one float32 Gumbel argmax
    over ``p_unmask * softmax(logits)`` (mask logit at -inf) and a mask entry ``1 - p_unmask`` across the full
    ``[B, L, V]`` tensor; unmasked positions are copied.  Its cost does not depend on ``p_unmask``.
``categorical_multinomial``
    ``torch.multinomial`` over ``softmax(logits.float())`` for ``[R, V]`` logits.
``categorical_multinomial_cumsum``
    The fastest plain-PyTorch single draw we know on CPU: two draws with replacement, keep the first, which
    forces ``torch.multinomial``'s cumulative-sum path instead of its one-sample exponential race.
``importance_resample_reference``
    EDLM's resampling step: ``softmax(-energies / temperature)`` in float64, one ``torch.multinomial`` draw
    per row, plus the effective sample size so that it returns what the engine's op returns.
"""

from __future__ import annotations

from typing import Union

import torch

__all__ = [
    "gumbel_fp32_step",
    "gumbel_fp64_step",
    "multinomial_step",
    "masked_step_reference",
    "categorical_multinomial",
    "categorical_multinomial_cumsum",
    "importance_resample_reference",
]


def _gumbel_argmax(probs: torch.Tensor) -> torch.Tensor:
    # Written exactly as MDLM's ``_sample_categorical``: the 1e-10 guards are part of what is measured.
    gumbel_norm = 1e-10 - (torch.rand_like(probs) + 1e-10).log()
    return (probs / gumbel_norm).argmax(dim=-1)


def _gumbel_step(logits: torch.Tensor, k: int, dtype: torch.dtype) -> torch.Tensor:
    B, L, _ = logits.shape
    repeated = logits.repeat(k, 1, 1)
    probs = torch.softmax(repeated.to(dtype), dim=-1)
    return _gumbel_argmax(probs).view(k, B, L)


def gumbel_fp32_step(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Draw ``k`` tokens per position with the float32 Gumbel-max sampler of the MDLM/EDLM reference code.

    Parameters
    ----------
    logits : Tensor [B, L, V]
        Any float dtype; converted to float32 after the ``k``-fold repeat.
    k : int
        Candidates per sequence.

    Returns
    -------
    tokens : int64 Tensor [k, B, L]
        ``tokens[j]`` is candidate ``j`` for every sequence.
    """
    return _gumbel_step(logits, k, torch.float32)


def gumbel_fp64_step(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Draw ``k`` tokens per position with Gumbel-max in float64 (the LLaDA-style precision fix).

    Parameters
    ----------
    logits : Tensor [B, L, V]
        Any float dtype; the whole ``k``-fold repeated tensor is cast to float64.
    k : int
        Candidates per sequence.

    Returns
    -------
    tokens : int64 Tensor [k, B, L]
    """
    return _gumbel_step(logits, k, torch.float64)


def multinomial_step(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Draw ``k`` tokens per position with ``torch.multinomial`` (with replacement).

    Parameters
    ----------
    logits : Tensor [B, L, V]
    k : int
        Draws per position.

    Returns
    -------
    tokens : int64 Tensor [k, B, L]
    """
    B, L, V = logits.shape
    probs = torch.softmax(logits.float(), dim=-1).reshape(B * L, V)
    draws = torch.multinomial(probs, k, replacement=True)
    return draws.t().reshape(k, B, L)


def masked_step_reference(
    logits: torch.Tensor,
    x_t: torch.Tensor,
    mask_id: int,
    p_unmask: Union[float, torch.Tensor],
) -> torch.Tensor:
    """One MDLM ancestral reverse step in plain PyTorch, as the reference code takes it.

    Parameters
    ----------
    logits : Tensor [B, L, V]
    x_t : int64 Tensor [B, L]
    mask_id : int
        Its entry holds the probability of staying masked.
    p_unmask : float or Tensor [B]
        Probability that a masked position unmasks at this step.

    Returns
    -------
    x_s : int64 Tensor [B, L]

    Notes
    -----
    The reference builds ``q = p_unmask * softmax(logits)`` with ``q[mask] = 1 - p_unmask`` and takes one
    float32 Gumbel argmax per position (MDLM's ``_ddpm_caching_update``, scaled by ``1 / move_chance_t``): every
    position's whole row is read and noised whatever ``p_unmask`` is.
    """
    B, L, _ = logits.shape
    p = torch.as_tensor(p_unmask, dtype=torch.float32, device=logits.device)
    p = p.view(B, 1, 1) if p.dim() == 1 else p
    if not torch.isneginf(logits[..., mask_id]).all():
        # The reference's models give the mask logit -inf (MDLM's SUBS parameterization); make it so.
        logits = logits.clone()
        logits[..., mask_id] = float("-inf")
    probs = torch.softmax(logits.float(), dim=-1) * p
    probs[..., mask_id] = (1.0 - p).squeeze(-1) if p.dim() == 3 else 1.0 - p
    sampled = _gumbel_argmax(probs)
    return torch.where(x_t == mask_id, sampled, x_t)


def categorical_multinomial(logits: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
    """Draw ``num_samples`` tokens per row with ``torch.multinomial`` over ``softmax(logits.float())``.

    Parameters
    ----------
    logits : Tensor [R, V]
    num_samples : int

    Returns
    -------
    tokens : int64 Tensor [R, num_samples]

    Notes
    -----
    ``replacement=True`` gives independent draws.  For ``num_samples=1`` PyTorch ignores it and takes its
    exponential-race path, ``argmax(probs / Exponential(1))``, which draws one random number per logit; with
    more samples and replacement it takes the cumulative-sum path used by :func:`multinomial_step`.
    """
    return torch.multinomial(torch.softmax(logits.float(), dim=-1), num_samples, replacement=True)


def categorical_multinomial_cumsum(logits: torch.Tensor) -> torch.Tensor:
    """One token per row with ``torch.multinomial``'s cumulative-sum path.

    Parameters
    ----------
    logits : Tensor [R, V]

    Returns
    -------
    tokens : int64 Tensor [R, 1]

    Notes
    -----
    Draws are independent with replacement, so the first of two draws is distributed exactly as one draw.
    """
    return torch.multinomial(torch.softmax(logits.float(), dim=-1), 2, replacement=True)[:, :1]


def importance_resample_reference(energies: torch.Tensor, temperature: float = 1.0):
    """Pick one of ``k`` candidates per row with probability ``softmax(-energies / temperature)``.

    Parameters
    ----------
    energies : float Tensor [B, k]
    temperature : float
        ``> 0``.

    Returns
    -------
    index : int64 Tensor [B]
    ess : float64 Tensor [B]
        Effective sample size ``1 / sum(w ** 2)`` of the normalized weights.
    """
    w = torch.softmax(-energies.double() / temperature, dim=-1)
    index = torch.multinomial(w, 1, replacement=True).squeeze(-1)
    ess = 1.0 / (w * w).sum(dim=-1)
    return index, ess


def speculative_verify_reference(d_logits: torch.Tensor, ar_logits: torch.Tensor, drafts: torch.Tensor,
                                 u: torch.Tensor, poe_weight: float, temperature: float = 1.0, mask_id: int = -1):
    """Speculative verification the plain-PyTorch way (the sampler's first version, and how PoE-Bridge's code
    does it): float64 log-softmaxes of the whole window, [K B, W + 1, V] each, then the accept run and the
    residual draw.  ``u`` [K B, W + 1]: slots 0 .. W - 1 test the drafts, slot W draws.  Returns (n_acc, fix)."""
    N, W = drafts.shape
    K = N // d_logits.shape[0]
    d = torch.log_softmax(d_logits.double(), -1).repeat_interleave(K, 0)
    if mask_id >= 0:
        d[..., mask_id] = float("-inf")
    log_q = torch.log_softmax(d / temperature, -1)
    a = torch.log_softmax(ar_logits.double(), -1)
    w = poe_weight
    mixed = a if w == 0 else d if w == 1 else w * d + (1 - w) * a
    log_pi = torch.log_softmax(mixed / temperature, -1)
    y = drafts[..., None]
    ratio = log_pi[:, :W].gather(-1, y).squeeze(-1) - log_q[:, :W].gather(-1, y).squeeze(-1)
    n_acc = torch.cumprod((torch.log(u[:, :W]) < ratio).long(), 1).sum(1)
    rows = torch.arange(N, device=drafts.device)
    pi, q = log_pi[rows, n_acc].exp(), log_q[rows, n_acc].exp()
    residual = torch.where((n_acc < W)[:, None], (pi - q).clamp(min=0.0), 0.0)
    weights = torch.where(residual.sum(-1, keepdim=True) > 0, residual, pi)
    cum = weights.cumsum(-1)
    fix = torch.searchsorted(cum, (u[:, W] * cum[:, -1])[:, None], right=True).squeeze(1).clamp(max=cum.shape[-1] - 1)
    return n_acc, fix
