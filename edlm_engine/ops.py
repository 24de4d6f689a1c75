"""Native ops: exact masked-token categorical sampling, importance resampling and fused rescoring.

Every op is a pure function of ``(seed, offset, row_offset, inputs)``: draws come from a Philox4x32-10
stream keyed by ``seed`` and indexed by ``(offset, global row, draw)``, so the result never depends on the
device, the thread count or how rows are split into calls (pass ``row_offset`` = index of the first row).
Normalizers and cumulative sums are float64 and uniforms carry 53 random bits, so token ``v`` is drawn with
probability ``softmax(logits / temperature)[v]`` up to float64 rounding; no ``[B, L, V]`` temporary is made.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch

from . import _C

__all__ = [
    "categorical",
    "sample_masked",
    "sample_candidates",
    "sample_scored",
    "SCORES",
    "importance_resample",
    "speculative_verify",
    "uniform",
    "token_logprob",
    "sequence_logprob",
    "lm_head_logprob",
    "build_info",
    "PRECISIONS",
]

PRECISIONS = ("fp64", "fp32-gumbel")
SCORES = ("p_draw", "p_top1", "p_top2", "entropy")  # the rows of sample_scored's scores
_ops = torch.ops.edlm_engine


def build_info() -> dict:
    """What this build contains.

    Returns
    -------
    dict
        ``version``, ``with_cuda`` (CUDA kernels compiled in), ``cuda_archs``, ``openmp`` and ``max_threads``.

    Examples
    --------
    >>> import edlm_engine
    >>> sorted(edlm_engine.build_info())[:2]
    ['cuda_archs', 'max_threads']
    """
    return dict(_C.build_info())


def _check_int(name: str, value, low: int, high: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            import numpy as np

            if isinstance(value, np.integer):
                value = int(value)
            else:
                raise TypeError
        except TypeError:
            raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    if value < low or (high is not None and value >= high):
        rng = f">= {low}" if high is None else f"in [{low}, {high})"
        raise ValueError(f"{name} must be {rng}, got {value}")
    return value


def _check_common(seed, offset, temperature, precision, row_offset=0) -> Tuple[int, int, float, str, int]:
    seed = _check_int("seed", seed, 0, 2**63)
    offset = _check_int("offset", offset, 0, 2**40)
    row_offset = _check_int("row_offset", row_offset, 0, 2**48)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature must be a number, got {type(temperature).__name__}")
    temperature = float(temperature)
    if not (temperature >= 0.0) or temperature == float("inf"):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return seed, offset, temperature, precision, row_offset


def _check_filters(top_k, top_p, min_p) -> Tuple[int, float, float]:
    """The filters as the native ops take them: 0, 1.0 and 0.0 switch top_k, top_p and min_p off."""
    top_k = 0 if top_k is None else _check_int("top_k", top_k, 1)
    for name, value, default in (("top_p", top_p, 1.0), ("min_p", min_p, 0.0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise TypeError(f"{name} must be a number or None, got {type(value).__name__}")
    top_p = 1.0 if top_p is None else float(top_p)
    min_p = 0.0 if min_p is None else float(min_p)
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if not 0.0 <= min_p <= 1.0:
        raise ValueError(f"min_p must be in [0, 1], got {min_p}")
    return top_k, top_p, min_p


def _check_logits(logits: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if logits.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"logits must be float32, float16 or bfloat16, got {logits.dtype}")


def categorical(
    logits: torch.Tensor,
    num_samples: int = 1,
    *,
    seed: int,
    offset: int = 0,
    temperature: float = 1.0,
    exclude: Optional[Union[int, torch.Tensor, Sequence[int]]] = None,
    precision: str = "fp64",
    row_offset: int = 0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    min_p: Optional[float] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Draw ``num_samples`` tokens per row from ``softmax(logits / temperature)``, exactly.

    Parameters
    ----------
    logits : Tensor [..., V]
        float32, float16 or bfloat16, last dimension contiguous.  NaN, +inf, or a row with no finite
        drawable entry raises ``ValueError`` naming the row.
    num_samples : int
        Independent draws per row.  They share one read of the row: O(V + num_samples * log V).
    seed, offset : int
        Philox key and stream offset (use a new offset per step of a sampler).
    temperature : float
        ``>= 0``; 0 means argmax (lowest index on ties) with log-probability 0.
    exclude : int, sequence of int or int64 Tensor, optional
        Token ids never drawn (duplicates allowed); the rest is renormalized.  An id outside ``[0, V)`` is a
        ``ValueError``.
    precision : {"fp64", "fp32-gumbel"}
        ``"fp64"`` is exact.  ``"fp32-gumbel"`` reproduces the float32 Gumbel-max sampler of the MDLM/EDLM
        reference code, whose 24-bit uniforms cap the Gumbel noise near 16.6 and truncate the tail; it exists
        for comparisons only.
    row_offset : int
        Global index of the first row, so that splitting rows across calls gives the same draws.
    top_k, top_p, min_p : optional
        Filters applied exactly before the draw, the kept set renormalized: the ``top_k`` largest logits
        (ties with the k-th kept), then the smallest set of the largest whose probability reaches ``top_p`` (the
        crossing token kept, ties with it too), then the tokens with ``p >= min_p * p_max``.  None is off.
        Found by a threshold search over the row, without sorting; fp64 precision only.

    Returns
    -------
    tokens : int64 Tensor [..., num_samples]
    logp : float64 Tensor [..., num_samples]
        ``log_softmax(logits / temperature)`` of each drawn token (with ``exclude`` renormalized away).

    Examples
    --------
    >>> import torch
    >>> from edlm_engine import ops
    >>> logits = torch.tensor([[0.0, 1.0, 2.0], [5.0, 0.0, 0.0]])
    >>> tokens, logp = ops.categorical(logits, 4, seed=1, exclude=[0])
    >>> bool((tokens != 0).all())
    True
    """
    _check_logits(logits)
    num_samples = _check_int("num_samples", num_samples, 1)
    seed, offset, temperature, precision, row_offset = _check_common(seed, offset, temperature, precision, row_offset)
    lead = logits.shape[:-1]
    flat = logits.reshape(-1, logits.shape[-1]) if logits.dim() != 2 else logits
    if exclude is not None:
        exclude = _exclude_tensor(exclude, logits.device)  # its range is checked natively, with no read-back
    filters = _check_filters(top_k, top_p, min_p)
    tokens, logp = _ops.categorical(flat, num_samples, seed, offset, temperature, exclude, precision, *filters,
                                    row_offset)
    return tokens.reshape(*lead, num_samples), logp.reshape(*lead, num_samples)


def _exclude_tensor(exclude, device) -> torch.Tensor:
    """A token id, a sequence of them or an int64 tensor, as a flat int64 tensor on ``device``; one id (the mask,
    every step) is filled there, with no host-to-device copy (which would wait for the stream)."""
    if isinstance(exclude, torch.Tensor):
        if exclude.dtype != torch.int64:
            raise TypeError(f"exclude must hold int64 token ids, got {exclude.dtype}")
        return exclude.reshape(-1).to(device)
    if not isinstance(exclude, (list, tuple, range, set, frozenset)):
        return torch.full((1,), _check_exclude_id(exclude), dtype=torch.int64, device=device)
    return torch.tensor([_check_exclude_id(i) for i in exclude], dtype=torch.int64, device=device)


def _check_exclude_id(value) -> int:
    try:
        return _check_int("exclude id", value, -(2**63))
    except TypeError:
        raise TypeError(f"exclude must be a token id, a sequence of token ids or an int64 Tensor, got {value!r}") \
            from None


def _p_unmask_tensor(p_unmask, B: int, device) -> torch.Tensor:
    if isinstance(p_unmask, torch.Tensor):
        p = p_unmask.to(device=device, dtype=torch.float64)
    elif isinstance(p_unmask, (int, float)) and not isinstance(p_unmask, bool):
        p = torch.full((), float(p_unmask), dtype=torch.float64, device=device)  # a fill: no host-to-device copy
    else:
        raise TypeError(f"p_unmask must be a float or a float Tensor of shape [B], got {type(p_unmask).__name__}")
    if p.dim() not in (0, 1) or (p.dim() == 1 and p.shape[0] != B):
        raise ValueError(f"p_unmask must be a scalar or have shape [B] = [{B}], got {tuple(p.shape)}")
    return p  # values outside [0, 1] are refused natively, in one check shared with direct op calls


def _check_masked(logits, x_t, mask_id, allow_none=False) -> None:
    _check_logits(logits)
    if not isinstance(x_t, torch.Tensor) or x_t.dtype != torch.int64:
        raise TypeError("x_t must be an int64 Tensor [B, L]")
    if logits.dim() != 3 or x_t.shape != logits.shape[:2]:
        raise ValueError(
            f"logits must be [B, L, V] and x_t [B, L]; got logits {tuple(logits.shape)} and x_t {tuple(x_t.shape)}"
        )
    if x_t.device != logits.device:
        raise ValueError(f"x_t and logits must be on the same device, got {x_t.device} and {logits.device}")
    if not (allow_none and mask_id == -1):
        _check_int("mask_id", mask_id, 0, logits.shape[-1])


def sample_masked(
    logits: torch.Tensor,
    x_t: torch.Tensor,
    mask_id: int,
    p_unmask: Union[float, torch.Tensor],
    *,
    seed: int,
    offset: int = 0,
    temperature: float = 1.0,
    precision: str = "fp64",
    row_offset: int = 0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    min_p: Optional[float] = None,
) -> torch.Tensor:
    """One ancestral reverse step of masked diffusion.

    Every masked position of ``x_t`` independently unmasks with probability ``p_unmask`` and then takes a
    token drawn from ``softmax(logits / temperature)`` with the mask token excluded; other positions are
    copied.  The Bernoulli is decided first, so rows that stay masked are never read.  With
    ``precision="fp32-gumbel"`` the step is the reference code's instead: one float32 Gumbel argmax per masked
    row over ``p_unmask * softmax`` and a mask entry of ``1 - p_unmask``, so every masked row is read and, with
    small ``p_unmask``, rare tokens lose to the mask entry more often than they should.

    Parameters
    ----------
    logits : Tensor [B, L, V]
        Denoiser output (float32, float16 or bfloat16; last dimension contiguous).
    x_t : int64 Tensor [B, L]
    mask_id : int
        In ``[0, V)``; never emitted by a draw.
    p_unmask : float or Tensor [B]
        In ``[0, 1]``, per sequence or shared.
    seed, offset, temperature, precision, row_offset
        As in :func:`categorical`; with ``"fp64"``, row ``b * L + l`` draws exactly what ``categorical`` would
        draw for it.
    top_k, top_p, min_p : optional
        As in :func:`categorical`.

    Returns
    -------
    x_s : int64 Tensor [B, L]

    Examples
    --------
    >>> import torch
    >>> from edlm_engine import ops
    >>> x_t = torch.full((2, 5), 3)
    >>> x_s = ops.sample_masked(torch.randn(2, 5, 4), x_t, 3, 1.0, seed=0)
    >>> bool((x_s != 3).all())
    True
    """
    _check_masked(logits, x_t, mask_id)
    seed, offset, temperature, precision, row_offset = _check_common(seed, offset, temperature, precision, row_offset)
    p = _p_unmask_tensor(p_unmask, logits.shape[0], logits.device)
    filters = _check_filters(top_k, top_p, min_p)
    return _ops.sample_masked(logits, x_t, mask_id, p, seed, offset, temperature, precision, *filters, row_offset)


def sample_candidates(
    logits: torch.Tensor,
    x_t: torch.Tensor,
    mask_id: int,
    k: int,
    *,
    seed: int,
    offset: int = 0,
    temperature: float = 1.0,
    precision: str = "fp64",
    row_offset: int = 0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    min_p: Optional[float] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Draw ``k`` clean candidates ``x0 ~ p(x0 | x_t)`` for EDLM importance sampling.

    Every masked position draws ``k`` tokens from ``softmax(logits / temperature)`` (mask excluded) with
    one read of its row; unmasked positions are copied and never read.

    Parameters
    ----------
    logits : Tensor [B, L, V]
    x_t : int64 Tensor [B, L]
    mask_id : int
        In ``[0, V)``.
    k : int
        Candidates per sequence, ``>= 1``.
    seed, offset, temperature, precision, row_offset
        As in :func:`categorical`: candidate ``j`` of row ``b * L + l`` is draw ``j`` of that row.
    top_k, top_p, min_p : optional
        As in :func:`categorical`; ``log_q`` is then of the filtered, renormalized distribution.

    Returns
    -------
    x0 : int64 Tensor [k, B, L]
    log_q : float64 Tensor [k, B]
        Sum over masked positions of the drawn tokens' log-probabilities (float64).

    Examples
    --------
    >>> import torch
    >>> from edlm_engine import ops
    >>> x0, log_q = ops.sample_candidates(torch.randn(1, 6, 5), torch.full((1, 6), 4), 4, k=3, seed=0)
    >>> x0.shape, log_q.shape
    (torch.Size([3, 1, 6]), torch.Size([3, 1]))
    """
    _check_masked(logits, x_t, mask_id)
    k = _check_int("k", k, 1)
    seed, offset, temperature, precision, row_offset = _check_common(seed, offset, temperature, precision, row_offset)
    filters = _check_filters(top_k, top_p, min_p)
    return _ops.sample_candidates(logits, x_t, mask_id, k, seed, offset, temperature, precision, *filters, row_offset)


def sample_scored(
    logits: torch.Tensor,
    x_t: torch.Tensor,
    mask_id: int,
    *,
    seed: int,
    offset: int = 0,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    min_p: Optional[float] = None,
    row_offset: int = 0,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One draw per masked position together with the scores confidence-based decoding ranks positions by.

    Each masked position of ``x_t`` draws a token from ``softmax(logits / temperature)`` (mask excluded,
    filters applied, kept set renormalized), exactly, and returns with it the probability of the draw, the two
    largest probabilities and the entropy of that filtered distribution, all from one read of its row.  Positions
    that are not masked are copied and never read (their scores are 0, 0, 0 and +inf: they rank last): pass the slice of the logits that may commit,
    e.g. the current block, to read nothing else.  At temperature 0 the draw is the argmax and the scores are
    those of the temperature-1 distribution.

    Parameters
    ----------
    logits : Tensor [B, L, V]
        float32, float16 or bfloat16; any strides with the last dimension contiguous (a block slice is read in
        place).
    x_t : int64 Tensor [B, L]
    mask_id : int
        Positions of ``x_t`` holding it are drawn (it never is); -1 draws every position and excludes no id (a
        uniform-noise canvas, as DiffusionGemma's, has no mask).
    seed, offset, temperature, row_offset
        As in :func:`categorical`; the draw of row ``b * L + l`` is draw 0 of that row, as in
        :func:`categorical`.
    top_k, top_p, min_p : optional
        As in :func:`categorical`.

    Returns
    -------
    tokens : int64 Tensor [B, L]
    scores : float64 Tensor [4, B, L]
        ``p_draw``, ``p_top1``, ``p_top2`` and ``entropy`` (nats), in the order of :data:`SCORES`.
    argmax : int64 Tensor [B, L]
        The first index of each read position's largest drawable logit, read off the same pass (copied from
        ``x_t`` where not read).

    Examples
    --------
    >>> import torch
    >>> from edlm_engine import ops
    >>> logits = torch.log(torch.tensor([[[0.5, 0.3, 0.2, 0.0]]]))  # id 3 is the mask
    >>> tokens, scores, argmax = ops.sample_scored(logits, torch.full((1, 1), 3), 3, seed=0, temperature=0.0)
    >>> tokens.item(), argmax.item(), [round(v, 3) for v in scores[:3, 0, 0].tolist()]
    (0, 0, [0.5, 0.5, 0.3])
    """
    _check_masked(logits, x_t, mask_id, allow_none=True)
    seed, offset, temperature, _, row_offset = _check_common(seed, offset, temperature, "fp64", row_offset)
    filters = _check_filters(top_k, top_p, min_p)
    return _ops.sample_scored(logits, x_t, mask_id, seed, offset, temperature, *filters, row_offset)


def speculative_verify(
    d_logits: torch.Tensor,
    ar_logits: torch.Tensor,
    drafts: torch.Tensor,
    n_valid: torch.Tensor,
    *,
    poe_weight: float = 0.0,
    temperature: float = 1.0,
    mask_id: int = -1,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    min_p: Optional[float] = None,
    seed: int,
    offset: int = 0,
    row_offset: int = 0,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Verify each particle's drafted window against the target ``pi = softmax((w l_D + (1 - w) l_AR) / T)``.

    Particle ``n`` (of sequence ``n // K``) drafted ``drafts[n, j] ~ q_j = softmax(l_D / T)`` at window position
    ``j``; its drafts are accepted left to right while ``u_j < pi_j(y_j) / q_j(y_j)``, and at the first rejection
    a token is drawn from ``normalize(max(0, pi_j - q_j))`` (``pi_j`` where that mass is 0), or from ``pi_W`` when
    all ``W`` drafts pass.  One pass per row and position normalizes q, p_AR and pi in float64; nothing
    ``[K, W, V]``-sized is written.  ``mask_id`` is never drawn (-1: none); AR ids at or past ``Va`` have
    probability 0 under pi (unless ``w = 1``, where pi is the draft's own), and pi covers the denoiser's ``V``
    ids.

    Parameters
    ----------
    d_logits : float Tensor [B, W + 1, V]
        The denoiser's logits at the window and the next position, shared by the sequence's K particles.
    ar_logits : Tensor [B K, W + 1, Va], d_logits' dtype
        The AR model's logits (any normalization) at the same positions, teacher-forced on each particle's drafts.
    drafts : int64 Tensor [B K, W]
    n_valid : int64 Tensor [B K]
        Window positions inside the sequence (``min(W + 1, L - c)``; 0 for a finished row, which is not read;
        values are clamped to [0, W + 1], which needs no read of them on the host).
    poe_weight, temperature : float
        ``w`` in [0, 1] and ``T > 0``.
    top_k, top_p, min_p : optional
        The filters the drafts were drawn with (as in :func:`categorical`): they shape q, the proposal; the
        target pi is never filtered, so the emitted tokens follow pi whatever the filters.
    seed, offset, row_offset : int
        As in :func:`categorical`; ``row_offset`` is the global index of the first particle.  Slot ``s`` of
        particle ``n`` uses ``uniform`` row ``(row_offset + n) (W + 1) + s``: slots ``0 .. W - 1`` test the drafts,
        slot ``W`` draws the fixing token.

    Returns
    -------
    n_acc : int64 Tensor [B K]
        Accepted drafts (the run length).
    fix : int64 Tensor [B K]
        The token at position ``n_acc`` (-1 when the sequence ends first).
    log_q, log_pa, log_pi : float64 Tensor [B K, W + 1]
        At each emitted position ``j <= n_acc``: log q, log p_AR and log pi of the emitted token (0 beyond).

    Examples
    --------
    >>> import torch
    >>> from edlm_engine import ops
    >>> d = torch.zeros(1, 3, 4)                      # a uniform draft, W = 2
    >>> n_acc, fix, log_q, log_pa, log_pi = ops.speculative_verify(d, d.clone(), torch.tensor([[1, 2]]),
    ...                                                             torch.tensor([3]), seed=0)
    >>> int(n_acc), int(fix) in range(4)             # the target equals the draft: all accepted
    (2, True)
    """
    for name, x in (("d_logits", d_logits), ("ar_logits", ar_logits), ("drafts", drafts), ("n_valid", n_valid)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a Tensor, got {type(x).__name__}")
    temperature = float(temperature)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (the acceptance test divides by it), got {temperature}")
    seed, offset, temperature, _, row_offset = _check_common(seed, offset, temperature, "fp64", row_offset)
    return _ops.speculative_verify(d_logits, ar_logits, drafts, n_valid, float(poe_weight), temperature,
                                   _check_int("mask_id", mask_id, -1), *_check_filters(top_k, top_p, min_p), seed, offset,
                                   row_offset)


def importance_resample(
    energies: torch.Tensor,
    *,
    seed: int,
    offset: int = 0,
    temperature: float = 1.0,
    row_offset: int = 0,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pick one candidate per row with probability ``softmax(-energies / temperature)``.

    Weights are computed in float64 after subtracting the row minimum; ``+inf`` energies weigh 0.  A row
    with NaN, with ``-inf``, or with every energy ``+inf`` raises ``ValueError`` naming the row.

    Parameters
    ----------
    energies : float Tensor [B, k]
    seed, offset, row_offset : int
        As in :func:`categorical`.
    temperature : float
        ``>= 0``; 0 picks uniformly among the minima.

    Returns
    -------
    index : int64 Tensor [B]
    ess : float64 Tensor [B]
        Effective sample size ``(sum w)^2 / sum w^2`` of the row's weights, in ``[1, k]``.

    Examples
    --------
    >>> import torch
    >>> from edlm_engine import ops
    >>> index, ess = ops.importance_resample(torch.tensor([[0.0, 0.0], [0.0, float("inf")]]), seed=0)
    >>> ess.tolist()
    [2.0, 1.0]
    """
    if not isinstance(energies, torch.Tensor) or not energies.is_floating_point():
        raise TypeError("energies must be a float Tensor [B, k]")
    if energies.dim() != 2 or energies.shape[1] < 1:
        raise ValueError(f"energies must have shape [B, k] with k >= 1, got {tuple(energies.shape)}")
    seed, offset, temperature, _, row_offset = _check_common(seed, offset, temperature, "fp64", row_offset)
    return _ops.importance_resample(energies, seed, offset, temperature, row_offset)


def uniform(
    shape: Sequence[int], *, seed: int, offset: int = 0, row_offset: int = 0, device=None
) -> torch.Tensor:
    """Uniforms in ``[0, 1)`` with 53 random bits, from the ops' Philox stream.

    Element ``r`` (row-major) is the uniform of global row ``row_offset + r``; it is the same number that
    :func:`sample_masked` compares with ``p_unmask`` for that row, and it does not depend on the device.

    Parameters
    ----------
    shape : sequence of int
    seed, offset, row_offset : int
        As in :func:`categorical`.
    device : torch.device or str, optional

    Returns
    -------
    float64 Tensor of ``shape``

    Examples
    --------
    >>> from edlm_engine import ops
    >>> u = ops.uniform((2, 3), seed=0)
    >>> bool(((u >= 0) & (u < 1)).all())
    True
    """
    seed, offset, _, _, row_offset = _check_common(seed, offset, 1.0, "fp64", row_offset)
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise ValueError(f"shape must hold non-negative sizes, got {shape}")
    like = torch.empty(shape, dtype=torch.int8, device=device)
    return _ops.uniform(like, seed, offset, row_offset)


def _check_logprob_inputs(logits, targets, weights, dims: int):
    _check_logits(logits)
    if logits.dim() != dims:
        raise ValueError(f"logits must have {dims} dimensions, got shape {tuple(logits.shape)}")
    if not isinstance(targets, torch.Tensor) or targets.dtype != torch.int64:
        raise TypeError("targets must be an int64 Tensor")
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"targets must have shape {tuple(logits.shape[:-1])}, got {tuple(targets.shape)}")
    if targets.device != logits.device:
        raise ValueError(f"targets and logits must be on the same device, got {targets.device} and {logits.device}")
    if weights is not None:
        if not isinstance(weights, torch.Tensor) or not (weights.is_floating_point() or weights.dtype == torch.bool):
            raise TypeError("weights must be None or a bool or float Tensor")
        if weights.shape != targets.shape:
            raise ValueError(f"weights must have shape {tuple(targets.shape)}, got {tuple(weights.shape)}")
        if weights.device != logits.device:
            raise ValueError(f"weights and logits must be on the same device, got {weights.device} and {logits.device}")


def token_logprob(
    logits: torch.Tensor, targets: torch.Tensor, weights: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Per-row ``weights * log_softmax(logits)[targets]`` in float64, one read of each row.

    Parameters
    ----------
    logits : Tensor [R, V]
        float32, float16 or bfloat16, last dimension contiguous.
    targets : int64 Tensor [R]
        In ``[0, V)`` wherever the weight is nonzero.
    weights : bool or float Tensor [R], optional
        Rows with weight 0 are not read and give 0 (their targets may be anything, e.g. -100 padding).

    Returns
    -------
    float64 Tensor [R]

    Examples
    --------
    >>> import torch
    >>> from edlm_engine import ops
    >>> ops.token_logprob(torch.zeros(2, 4), torch.tensor([0, 3])).tolist()  # log(1/4)
    [-1.3862943611198906, -1.3862943611198906]
    """
    _check_logprob_inputs(logits, targets, weights, 2)
    return _ops.token_logprob(logits, targets, weights)


def sequence_logprob(
    logits: torch.Tensor, targets: torch.Tensor, weights: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Sum over positions of ``weights * log_softmax(logits)[targets]``, in float64.

    Fuses log-softmax, gather and sum: each row of logits is read once (its max and float64 sum of
    exponentials), no ``[N, L, V]`` log-probability tensor is made, and the per-sequence sum runs over
    positions in a fixed order, so the result is deterministic.  The caller aligns targets (no shift is
    done here: for a causal LM pass ``logits[:, :-1]`` and ``x[:, 1:]``; strided views are read in place).

    Parameters
    ----------
    logits : Tensor [N, L, V]
        float32, float16 or bfloat16, last dimension contiguous.
    targets : int64 Tensor [N, L]
    weights : bool or float Tensor [N, L], optional
        Per-position weights; positions with weight 0 are not read.

    Returns
    -------
    float64 Tensor [N]
        A row with NaN or +inf, a row of only -inf, or a target outside ``[0, V)`` at a nonzero weight
        raises ``ValueError`` naming the position.

    Examples
    --------
    >>> import torch
    >>> from edlm_engine import ops
    >>> logits = torch.zeros(1, 3, 8)
    >>> ops.sequence_logprob(logits, torch.tensor([[1, 2, 3]]), torch.tensor([[True, False, True]]))
    tensor([-4.1589], dtype=torch.float64)
    """
    _check_logprob_inputs(logits, targets, weights, 3)
    return _ops.sequence_logprob(logits, targets, weights)


_CHUNK_BUDGET_BYTES = 64 * 2**20


def lm_head_logprob(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    weights: Optional[torch.Tensor] = None,
    *,
    bias: Optional[torch.Tensor] = None,
    chunk_rows: Optional[int] = None,
) -> torch.Tensor:
    """:func:`sequence_logprob` of ``hidden @ weight.T + bias`` without materializing those logits.

    Rows (positions) are processed in chunks: one matmul per chunk in the input dtype, then the fused
    log-softmax-gather kernel, so at most one chunk of logits exists at a time.  Positions with weight 0 are
    skipped before the matmul.

    Parameters
    ----------
    hidden : Tensor [N, L, H]
        float32, float16 or bfloat16 final hidden states.
    weight : Tensor [V, H]
        The output embedding (``model.get_output_embeddings().weight``), same dtype and device as ``hidden``.
    targets : int64 Tensor [N, L]
    weights : bool or float Tensor [N, L], optional
    bias : Tensor [V], optional
    chunk_rows : int, optional
        Rows per chunk.  Default: enough rows for the larger of ``hidden``'s size and 64 MiB of logits.

    Returns
    -------
    float64 Tensor [N]

    Examples
    --------
    >>> import torch
    >>> from edlm_engine import ops
    >>> h, W = torch.randn(2, 5, 16), torch.randn(100, 16)
    >>> t = torch.randint(0, 100, (2, 5))
    >>> ref = ops.sequence_logprob(h @ W.T, t)
    >>> bool(torch.allclose(ops.lm_head_logprob(h, W, t, chunk_rows=3), ref, rtol=1e-5))
    True
    """
    for name, x in (("hidden", hidden), ("weight", weight)):
        if not isinstance(x, torch.Tensor) or x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise TypeError(f"{name} must be a float32, float16 or bfloat16 Tensor")
    if hidden.dim() != 3 or weight.dim() != 2 or weight.shape[1] != hidden.shape[2]:
        raise ValueError(
            f"hidden must be [N, L, H] and weight [V, H] with the same H; got {tuple(hidden.shape)} and "
            f"{tuple(weight.shape)}"
        )
    if weight.dtype != hidden.dtype or weight.device != hidden.device:
        raise ValueError(f"weight must match hidden's dtype and device, got {weight.dtype}/{weight.device} and "
                         f"{hidden.dtype}/{hidden.device}")
    if bias is not None and (bias.shape != (weight.shape[0],) or bias.device != hidden.device):
        raise ValueError(f"bias must have shape [V] = [{weight.shape[0]}] on {hidden.device}")
    N, L, H = hidden.shape
    V = weight.shape[0]
    if not isinstance(targets, torch.Tensor) or targets.dtype != torch.int64 or targets.shape != (N, L):
        raise ValueError(f"targets must be an int64 Tensor of shape [N, L] = [{N}, {L}]")
    if targets.device != hidden.device:
        raise ValueError(f"targets and hidden must be on the same device, got {targets.device} and {hidden.device}")
    if weights is not None and (not isinstance(weights, torch.Tensor) or weights.shape != (N, L)):
        raise ValueError(f"weights must be None or a Tensor of shape [N, L] = [{N}, {L}]")
    elem = hidden.element_size()
    if chunk_rows is None:
        budget = max(hidden.numel() * elem, _CHUNK_BUDGET_BYTES)
        chunk_rows = max(1, budget // (V * elem))
    chunk_rows = _check_int("chunk_rows", chunk_rows, 1)

    h = hidden.reshape(N * L, H)
    t = targets.reshape(N * L)
    rows = torch.zeros(N * L, dtype=torch.float64, device=hidden.device)
    if weights is not None:
        w = weights.to(device=hidden.device, dtype=torch.float64).reshape(N * L)
        keep = torch.nonzero(w != 0).squeeze(1)
    else:
        w, keep = None, None
    n_rows = N * L if keep is None else keep.numel()
    for start in range(0, n_rows, chunk_rows):
        if keep is None:
            sel = slice(start, min(start + chunk_rows, n_rows))
        else:
            sel = keep[start : start + chunk_rows]
        logits = torch.nn.functional.linear(h[sel], weight, bias)
        rows[sel] = _ops.token_logprob(logits, t[sel], None if w is None else w[sel])
        del logits
    return rows.view(N, L).sum(1)


@torch.library.register_fake("edlm_engine::uniform")
def _uniform_fake(like, seed, offset, row_offset):
    return like.new_empty(like.shape, dtype=torch.float64)


@torch.library.register_fake("edlm_engine::token_logprob")
def _token_logprob_fake(logits, targets, weights):
    return logits.new_empty(targets.shape, dtype=torch.float64)


@torch.library.register_fake("edlm_engine::sequence_logprob")
def _sequence_logprob_fake(logits, targets, weights):
    return logits.new_empty((logits.shape[0],), dtype=torch.float64)


@torch.library.register_fake("edlm_engine::categorical")
def _categorical_fake(logits, num_samples, seed, offset, temperature, exclude, precision, top_k, top_p, min_p,
                     row_offset):
    shape = (logits.shape[0], num_samples)
    return (
        logits.new_empty(shape, dtype=torch.int64),
        logits.new_empty(shape, dtype=torch.float64),
    )


@torch.library.register_fake("edlm_engine::sample_masked")
def _sample_masked_fake(logits, x_t, mask_id, p_unmask, seed, offset, temperature, precision, top_k, top_p, min_p,
                        row_offset):
    return torch.empty_like(x_t, memory_format=torch.contiguous_format)


@torch.library.register_fake("edlm_engine::sample_candidates")
def _sample_candidates_fake(logits, x_t, mask_id, k, seed, offset, temperature, precision, top_k, top_p, min_p,
                            row_offset):
    B, L = x_t.shape
    return x_t.new_empty((k, B, L)), x_t.new_empty((k, B), dtype=torch.float64)


@torch.library.register_fake("edlm_engine::sample_scored")
def _sample_scored_fake(logits, x_t, mask_id, seed, offset, temperature, top_k, top_p, min_p, row_offset):
    B, L = x_t.shape
    tokens = torch.empty_like(x_t, memory_format=torch.contiguous_format)
    return tokens, x_t.new_empty((4, B, L), dtype=torch.float64), torch.empty_like(tokens)


@torch.library.register_fake("edlm_engine::importance_resample")
def _importance_resample_fake(energies, seed, offset, temperature, row_offset):
    B = energies.shape[0]
    return energies.new_empty((B,), dtype=torch.int64), energies.new_empty((B,), dtype=torch.float64)


@torch.library.register_fake("edlm_engine::speculative_verify")
def _speculative_verify_fake(d_logits, ar_logits, drafts, n_valid, poe_weight, temperature, mask_id, top_k, top_p,
                             min_p, seed, offset, row_offset):
    N, W = drafts.shape
    logs = [drafts.new_empty((N, W + 1), dtype=torch.float64) for _ in range(3)]
    return (drafts.new_empty((N,)), drafts.new_empty((N,)), *logs)
