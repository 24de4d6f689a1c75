"""Plain-PyTorch re-implementation of the public MDLM / EDLM reference samplers (end-to-end baseline).

This module is the honest baseline for the end-to-end benchmarks: it is what a user of the public MDLM code
(``Diffusion._sample`` with ``sampling.predictor=ddpm_cache``) and of the public EDLM code (``EBM._sample`` with
an autoregressive energy) runs without edlm-engine.  It is not part of the product and never imports
``edlm_engine``.

What it reproduces
------------------
* MDLM log-linear schedule: ``timesteps = linspace(1, eps, steps + 1)``, ``alpha(t) = 1 - (1 - eps) t``,
  ``sigma(t) = -log(alpha(t))`` (passed to the denoiser), and at a step ``t -> s`` a masked position unmasks
  with probability ``p_unmask = (alpha_s - alpha_t) / (1 - alpha_t)``.
* MDLM's ``ddpm_cache`` step: the denoiser logits become ``probs = softmax(logits.float())`` with the mask
  logit at ``-inf``; ``q_xs = p_unmask * probs`` with ``q_xs[mask] = 1 - p_unmask``, and
  ``_sample_categorical`` (``argmax(q / (1e-10 - log(rand + 1e-10)))``) draws for every position of the whole
  ``[B, L, V]`` tensor (the mask entry winning means "stays masked"); unmasked positions are copied (the
  ``copy_flag`` blend).
* MDLM's cache: when a step changes no token anywhere in the batch, the next step reuses the previous
  ``probs`` without calling the denoiser (a time-agnostic denoiser is assumed).  The final "noise removal"
  step fills the positions still masked with the argmax of the denoiser logits.
* EDLM importance sampling (an autoregressive energy, ``ebm_backbone=ar``) on the steps whose ``t`` lies in
  ``is_window`` and that made a fresh denoiser call: ``k = is_size`` candidates ``x0`` are drawn by repeating
  the batch ``k`` times (``probs.repeat(k, 1, 1)``, sample-major rows ``j * B + b``) and running the same
  float32 Gumbel-max over the repeated tensor; the energy is
  ``E = -log p_AR(x0) + log q(x0 | x_t)`` where ``log p_AR`` comes from a full forward pass of the causal LM,
  a ``log_softmax`` over the full ``[k * B, L, V]`` logits, a gather and a sum, and ``log q`` from a full
  ``log_softmax`` of the (repeated) denoiser logits, a gather and a sum over the masked positions; the weights
  are ``softmax(-E)`` in float32, one candidate per sequence is drawn with ``torch.multinomial``, and the
  step continues from its one-hot ``probs`` (each masked position takes the candidate's token with probability
  ``p_unmask``).  While ``x_t`` then does
  not change, the following steps keep revealing from the same candidate (EDLM caches
  ``one_hot(x0*)`` as the next ``probs``, a V-wide float32 tensor, and so does this module).

Known defects kept on purpose (this is "what people write", not a strawman and not a fix)
------------------------------------------------------------------------------------------
* float32 Gumbel-max: ``torch.rand`` in float32 has 24-bit uniforms, which caps the Gumbel noise near 16.6
  and truncates the tail of every categorical (Zheng et al., arXiv 2409.02908).
* Full-tensor sampling: every position is sampled from a V-wide categorical at every step, although only the
  positions that unmask need a draw; the ``k`` candidates repeat the whole ``[B, L, V]`` probability tensor.
* Full ``log_softmax``: the energy materializes ``[k * B, L, V]`` float32 log-probabilities of the causal LM
  and of the denoiser just to gather ``k * B * L`` entries.
* Peak memory is whatever these full tensors cost; nothing is chunked or fused.

Departures from the released MDLM / EDLM code, all of them (checked by running both on the oracle language:
with ``eps = 1e-5`` this module is token-for-token identical to MDLM's sampler, and equal in distribution to the
fully corrected EDLM sampler):
* the schedule floor ``eps`` defaults to 1e-3 here (the engine's default); the released configs use 1e-5;
* ``ar_carry_over`` is dropped: the released EDLM code can score the AR likelihood only at the positions masked
  in ``x_t``; here the AR model scores every position (the engine's ``energy_positions="all"``, the exact
  energy), so the carry-over variant is not reproduced;
* weights are ``softmax(-E)``; the released code computes ``softmax(+E)`` (issue #3 on the EDLM repository);
* ``log q`` uses log-probabilities; the released code gathers probabilities where log-probabilities are meant,
  and reduces the sums under bf16 autocast;
* candidate energies are regrouped as ``[k, B]`` to match ``repeat``'s sample-major layout; the released code
  views them as ``[B, k]``, which mixes candidates of different sequences when ``B > 1`` and ``k > 1``;
* the cache is batch-wide: the denoiser call is skipped only when no sequence of the batch changed, and the
  cached candidate is dropped for the whole batch (the engine also rescores only the sequences whose ``x_t``
  changed);
* the importance-sampling step reveals from the chosen candidate, as the released code does since its fix for
  issue #2 (before that fix it revealed from the plain denoiser draw).
None of these changes the baseline's cost.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Optional, Tuple

import torch

__all__ = ["reference_sample"]


def _sample_categorical(probs: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """MDLM's ``_sample_categorical``: float32 Gumbel-max over the whole tensor, 1e-10 guards included."""
    u = torch.rand(probs.shape, generator=generator, device=probs.device, dtype=probs.dtype)
    gumbel_norm = 1e-10 - (u + 1e-10).log()
    return (probs / gumbel_norm).argmax(dim=-1)


def _masked_logits(logits: torch.Tensor, mask_id: int) -> torch.Tensor:
    """float32 copy of the denoiser logits with the mask token's logit at ``-inf`` (if it is in the vocab)."""
    logits = logits.float().clone()
    if 0 <= mask_id < logits.shape[-1]:
        logits[..., mask_id] = float("-inf")
    return logits


def _ar_log_likelihood(energy_model, x0: torch.Tensor, bos_id: Optional[int]) -> torch.Tensor:
    """``log p_AR(x0)`` per row: full causal-LM forward, full ``log_softmax``, gather, sum (float32)."""
    if bos_id is not None:
        bos = torch.full((x0.shape[0], 1), bos_id, dtype=x0.dtype, device=x0.device)
        inputs = torch.cat([bos, x0], dim=1)
        targets = x0
    else:
        # Without a BOS token the first token has no context and is not scored.
        inputs = x0
        targets = x0[:, 1:]
    logits = energy_model(input_ids=inputs).logits.float()
    logp = torch.log_softmax(logits, dim=-1)[:, :-1]
    return logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1).sum(dim=-1)


def _importance_sample(
    energy_model,
    logits: torch.Tensor,
    probs: torch.Tensor,
    x: torch.Tensor,
    mask_id: int,
    k: int,
    bos_id: Optional[int],
    generator: Optional[torch.Generator],
) -> Tuple[torch.Tensor, torch.Tensor]:
    """EDLM's importance-sampling step: returns the chosen ``x0*`` [B, L] and the ESS of each row [B]."""
    B, L = x.shape
    # k candidates by repeating the whole batch (rows j * B + b), float32 Gumbel-max over the repeated tensor.
    x_rep = x.repeat(k, 1)
    sampled = _sample_categorical(probs.repeat(k, 1, 1), generator)
    masked_rep = x_rep == mask_id
    x0 = torch.where(masked_rep, sampled, x_rep)

    # log q(x0 | x_t): full log_softmax of the (repeated) denoiser logits, gather, sum over masked positions.
    log_p_x0 = torch.log_softmax(logits, dim=-1).repeat(k, 1, 1)
    log_q_tok = log_p_x0.gather(-1, x0.unsqueeze(-1)).squeeze(-1)
    log_q = torch.where(masked_rep, log_q_tok, torch.zeros_like(log_q_tok)).sum(dim=-1)

    log_p_ar = _ar_log_likelihood(energy_model, x0, bos_id)
    energy = -log_p_ar + log_q  # [k * B]

    energy = energy.view(k, B).t()  # [B, k], matching repeat's sample-major layout
    weights = torch.softmax(-energy, dim=-1)
    index = torch.multinomial(weights, 1, generator=generator).view(B)
    ess = weights.sum(dim=-1) ** 2 / (weights * weights).sum(dim=-1)
    x0_star = x0.view(k, B, L)[index, torch.arange(B, device=x.device)]
    return x0_star, ess


@torch.no_grad()
def _sample_batch(
    denoiser: Callable,
    mask_id: int,
    B: int,
    seq_len: int,
    steps: int,
    energy_model,
    is_size: int,
    is_window: Tuple[float, float],
    eps: float,
    bos_id: Optional[int],
    device,
    generator: Optional[torch.Generator],
    stats: dict,
) -> torch.Tensor:
    x = torch.full((B, seq_len), mask_id, dtype=torch.int64, device=device)
    timesteps = torch.linspace(1.0, eps, steps + 1, device=device)
    is_lo, is_hi = is_window

    def alpha(t: float) -> float:
        return 1.0 - (1.0 - eps) * t

    def sigma(t: float) -> torch.Tensor:
        return torch.full((B,), -math.log(alpha(t)), dtype=torch.float32, device=device)

    probs_cache = None  # probs reused while x does not change (MDLM ddpm_cache / EDLM one-hot x0*)
    last_logits = None  # raw denoiser logits of the last call
    last_logits_fresh = False  # x unchanged since last_logits were computed

    for i in range(steps):
        t = float(timesteps[i])
        s = float(timesteps[i + 1])
        p_unmask = (alpha(s) - alpha(t)) / (1.0 - alpha(t))
        masked = x == mask_id

        x0_star = None
        if probs_cache is None:
            logits = _masked_logits(denoiser(x, sigma(t)), mask_id)
            stats["denoiser_calls"] += 1
            last_logits, last_logits_fresh = logits, True
            probs = torch.softmax(logits, dim=-1)
            if energy_model is not None and is_lo <= t <= is_hi:
                x0_star, ess = _importance_sample(
                    energy_model, logits, probs, x, mask_id, is_size, bos_id, generator
                )
                stats["energy_calls"] += 1
                stats["candidates_scored"] += is_size * B
                stats["is_steps"] += 1
                stats["_ess_sum"] += float(ess.sum())
                stats["_ess_rows"] += B
        else:
            probs = probs_cache

        if x0_star is not None:
            # EDLM continues from the chosen candidate as a V-wide one-hot probability tensor.
            probs = torch.nn.functional.one_hot(x0_star, probs.shape[-1]).float()
        # q_xs: every position of the full [B, L, V] tensor takes one Gumbel draw over p_unmask * probs and the
        # mask entry 1 - p_unmask, as the reference does; unmasked positions are copied (the copy_flag blend).
        q_xs = probs * p_unmask
        if mask_id >= q_xs.shape[-1]:  # the denoiser scores data tokens only: the mask entry gets its own column
            q_xs = torch.cat([q_xs, q_xs.new_zeros(*q_xs.shape[:-1], mask_id + 1 - q_xs.shape[-1])], -1)
        q_xs[..., mask_id] = 1.0 - p_unmask
        x_next = torch.where(masked, _sample_categorical(q_xs, generator), x)

        if torch.equal(x_next, x):
            if probs_cache is None:
                probs_cache = probs
        else:
            probs_cache = None
            last_logits_fresh = False
        x = x_next

    # Noise removal: positions still masked take the argmax of the denoiser logits.
    masked = x == mask_id
    if bool(masked.any()):
        if not last_logits_fresh:
            last_logits = _masked_logits(denoiser(x, sigma(float(timesteps[-1]))), mask_id)
            stats["denoiser_calls"] += 1
        x = torch.where(masked, last_logits.argmax(dim=-1), x)
    return x


def reference_sample(
    denoiser: Callable,
    mask_id: int,
    n: int,
    seq_len: int,
    steps: int,
    *,
    energy_model=None,
    is_size: int = 2,
    is_window: Tuple[float, float] = (0.8, 1.0),
    eps: float = 1e-3,
    batch_size: Optional[int] = None,
    bos_id: Optional[int] = None,
    device="cpu",
    generator: Optional[torch.Generator] = None,
):
    """Sample ``n`` sequences with the MDLM ``ddpm_cache`` sampler, plus EDLM importance sampling.

    Parameters
    ----------
    denoiser : callable
        ``denoiser(x_t [B, L] int64, sigma [B] float32) -> logits [B, L, V]``; ``V`` may include ``mask_id``
        (its logit is ignored).  Assumed time-agnostic: cached probabilities are reused across steps.
    mask_id : int
        The mask token; never appears in the output.
    n, seq_len, steps : int
        Number of sequences, their length and the number of reverse steps.
    energy_model : HuggingFace causal LM, optional
        Called as ``energy_model(input_ids=...)`` and read through ``.logits``; its token ids are the
        denoiser's.  ``None`` gives plain MDLM sampling.
    is_size : int
        Candidates per sequence at an importance-sampling step.
    is_window : (float, float)
        ``(t_lo, t_hi)``: importance sampling runs on the steps with ``t_lo <= t <= t_hi``.
    eps : float
        Schedule floor; the last timestep is ``eps``.
    batch_size : int, optional
        Sequences per denoiser call; defaults to ``n``.
    bos_id : int, optional
        Prepended to the energy model's input; without it the first token is not scored by the AR model.
    device : str or torch.device
    generator : torch.Generator, optional
        Source of every random number (on ``device``).

    Returns
    -------
    tokens : int64 Tensor [n, seq_len]
    stats : dict
        ``denoiser_calls``, ``energy_calls``, ``candidates_scored``, ``is_steps``, ``mean_ess`` (NaN when no
        importance sampling ran), ``steps``, ``seconds``, ``tokens_per_second``.
    """
    if n < 1 or seq_len < 1 or steps < 1:
        raise ValueError("n, seq_len and steps must be >= 1")
    if is_size < 1:
        raise ValueError("is_size must be >= 1")
    batch_size = n if batch_size is None else int(batch_size)
    stats = {
        "denoiser_calls": 0,
        "energy_calls": 0,
        "candidates_scored": 0,
        "is_steps": 0,
        "_ess_sum": 0.0,
        "_ess_rows": 0,
    }
    start = time.perf_counter()
    chunks = []
    for first in range(0, n, batch_size):
        B = min(batch_size, n - first)
        chunks.append(
            _sample_batch(
                denoiser, mask_id, B, seq_len, steps, energy_model, is_size, tuple(is_window), eps,
                bos_id, device, generator, stats,
            )
        )
    tokens = torch.cat(chunks, dim=0)
    if tokens.device.type == "cuda":
        torch.cuda.synchronize(tokens.device)
    seconds = time.perf_counter() - start
    ess_sum, ess_rows = stats.pop("_ess_sum"), stats.pop("_ess_rows")
    stats["mean_ess"] = ess_sum / ess_rows if ess_rows else float("nan")
    stats["steps"] = steps
    stats["seconds"] = seconds
    stats["tokens_per_second"] = n * seq_len / seconds if seconds > 0 else float("inf")
    return tokens, stats
