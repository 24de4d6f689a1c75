"""Denoisers and energies: HuggingFace models or plain callables behind one small interface."""

from __future__ import annotations

import inspect
import os
import warnings
from typing import Callable, Optional

import torch

from . import ops

__all__ = ["Denoiser", "as_denoiser", "Energy", "LogLikelihoodEnergy", "AREnergy", "CausalLMEnergy", "as_energy",
           "check_vocabularies"]


def local_path_or_hub_name(name: str, what: str) -> str:
    """``name`` itself, after refusing what can only be a mistyped local path.

    transformers takes any missing path for a hub repository id and retries the network for half a minute
    before failing.  A hub id is ``name`` or ``org/name``; a missing path that starts with ``.``, ``/`` or ``~``,
    has more than one ``/``, or whose first folder exists here is a local path that is not there.
    """
    if os.path.exists(os.path.expanduser(name)):
        return os.path.expanduser(name)
    head = name.split("/")[0]
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or ("/" in name and os.path.isdir(head)):
        raise FileNotFoundError(f"{what} {name!r}: no such file or directory")
    return name


def _load_tokenizer(name, trust_remote_code):
    # transformers builds an empty default tokenizer for a folder without tokenizer files; its ids mean nothing.
    if os.path.isdir(name) and not any(
        os.path.exists(os.path.join(name, f)) for f in ("tokenizer_config.json", "tokenizer.json", "vocab.txt",
                                                         "vocab.json", "tokenizer.model")
    ):
        return None
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    except Exception as e:  # sampling works without one; only the text and the vocabulary check are lost
        warnings.warn(f"the tokenizer of {name} did not load ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                      "sampling goes on without decoded text or a tokenizer check", stacklevel=3)
        return None


def _config_int(config, *names):
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


class Denoiser:
    """``p_theta(x0 | x_t)`` as a callable ``(x_t [B, L], t [B]) -> logits [B, L, V]`` plus what the sampler needs.

    Parameters
    ----------
    fn : callable
        ``fn(x_t, t)`` returning logits (a Tensor, or an object with ``.logits``).
    mask_id : int
    time_conditioned : bool
        False when the output does not depend on t; the sampler then reuses the last output while the
        sequences do not change (exact caching).
    tokenizer : optional
        Used to decode text.
    max_positions : int, optional
        Longest sequence the model accepts.
    takes_attention_mask : bool
        ``fn`` takes a third argument, the bool [B, L] attention mask (False on left padding).
    shifted : bool
        Output i predicts position i + 1 (Dream-style); the sampler reads it shifted unless told otherwise.
    """

    def __init__(self, fn: Callable, mask_id: int, *, time_conditioned: bool = True, tokenizer=None,
                 max_positions: Optional[int] = None, vocab_size: Optional[int] = None, name: str = "callable",
                 takes_attention_mask: bool = False, shifted: bool = False):
        self.fn = fn
        self.mask_id = int(mask_id)
        self.time_conditioned = bool(time_conditioned)
        self.tokenizer = tokenizer
        self.max_positions = max_positions
        self.vocab_size = vocab_size
        self.name = name
        self.takes_attention_mask = takes_attention_mask
        self.shifted = shifted

    @torch.no_grad()
    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if attention_mask is not None and self.takes_attention_mask:
            out = self.fn(x_t, t, attention_mask)
        else:
            out = self.fn(x_t, t)
        logits = getattr(out, "logits", out)
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or logits.shape[:2] != x_t.shape:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"denoiser must return logits [B, L, V] for x_t {tuple(x_t.shape)}, got {shape}")
        if logits.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            logits = logits.float()
        if logits.shape[-1] <= self.mask_id:
            # The model scores data tokens only; the mask gets a -inf column so ids line up.
            pad = logits.new_full((*logits.shape[:2], self.mask_id + 1 - logits.shape[-1]), float("-inf"))
            logits = torch.cat([logits, pad], -1)
        if logits.stride(-1) != 1:
            logits = logits.contiguous()
        return logits


def _max_positions(model, config) -> Optional[int]:
    """Longest input: RoBERTa-style models start their position ids after the padding index, so they take
    max_position_embeddings - padding_idx - 1 tokens, not max_position_embeddings."""
    n = _config_int(config, "max_position_embeddings", "n_positions", "model_length", "max_seq_len")
    embeddings = getattr(getattr(model, "base_model", model), "embeddings", None)
    positions = getattr(embeddings, "position_embeddings", None)
    pad = getattr(positions, "padding_idx", None)
    if n is not None and isinstance(positions, torch.nn.Embedding) and pad is not None:
        return n - pad - 1
    return n


# Mask ids of model families whose checkpoints do not name theirs (LLaDA's code hard-wires 126336; Dream's
# tokenizer calls it <|mask|>).
_KNOWN_MASK_IDS = {"llada": 126336, "dream": 151666}
# Model families whose output i predicts position i + 1.
_SHIFTED_TYPES = ("dream",)


def _hf_denoiser(model, mask_id, tokenizer, schedule) -> Denoiser:
    params = inspect.signature(model.forward).parameters
    config = getattr(model, "config", None)
    model_type = str(getattr(config, "model_type", "")).lower()
    if mask_id is None and tokenizer is not None and getattr(tokenizer, "mask_token_id", None) is not None:
        mask_id = tokenizer.mask_token_id
    if mask_id is None and config is not None:
        mask_id = _config_int(config, "mask_token_id", "mask_id", "mask_index")
    if mask_id is None:
        mask_id = _KNOWN_MASK_IDS.get(model_type)
    if mask_id is None:
        raise ValueError(
            f"no mask id known for {type(model).__name__}: its tokenizer and config name none; pass mask_id="
        )
    vocab = _config_int(config, "vocab_size")
    if vocab is not None and not 0 <= mask_id < vocab:
        raise ValueError(f"mask_id {mask_id} is outside the denoiser's vocabulary [0, {vocab})")
    timed = "timesteps" in params or "sigma" in params
    key = "timesteps" if "timesteps" in params else "sigma"

    def fn(x_t, t, attention_mask=None):
        kwargs = {} if attention_mask is None else dict(attention_mask=attention_mask.long())
        if timed:
            kwargs[key] = schedule.sigma(t).to(x_t.device, torch.float32)
        return model(input_ids=x_t, **kwargs)

    return Denoiser(
        fn,
        mask_id,
        time_conditioned=timed,
        tokenizer=tokenizer,
        max_positions=_max_positions(model, config),
        vocab_size=vocab,
        name=type(model).__name__,
        takes_attention_mask="attention_mask" in params,
        shifted=model_type in _SHIFTED_TYPES,
    )


def _load_denoiser(name: str, trust_remote_code: bool):
    """A denoiser checkpoint with its own head: a ``*ForCausalLM`` saved with ``config.is_causal = False`` (how
    bidirectional LLaDA-like models live in transformers), else a masked LM, else ``AutoModel`` (remote-code
    models whose forward returns logits)."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
    if any(a.endswith("ForCausalLM") for a in getattr(config, "architectures", None) or []):
        if getattr(config, "is_causal", True) is not False:
            raise ValueError(f"{name} is a causal LM (its config does not set is_causal = False): it cannot denoise "
                             "masked positions; pass it as the energy, or a bidirectional checkpoint as the model")
        return transformers.AutoModelForCausalLM.from_pretrained(name, trust_remote_code=trust_remote_code)
    try:
        return transformers.AutoModelForMaskedLM.from_pretrained(name, trust_remote_code=trust_remote_code)
    except (ValueError, KeyError):
        return transformers.AutoModel.from_pretrained(name, trust_remote_code=trust_remote_code)


def as_denoiser(model, *, mask_id: Optional[int] = None, schedule=None, device=None, dtype=None,
                trust_remote_code: bool = False) -> Denoiser:
    """Wrap a HuggingFace masked LM (or its name/path) or a callable as a :class:`Denoiser`.

    A name or path loads with ``AutoModelForMaskedLM`` (``AutoModel`` as fallback, for LLaDA-like models whose
    forward returns logits; a ``*ForCausalLM`` checkpoint with ``config.is_causal = False`` with its own head);
    a forward that takes ``timesteps`` (MDLM) receives sigma(t).  ``mask_id``
    overrides the tokenizer's or config's.  A plain callable ``(x_t, t) -> logits`` is used as is; it is
    taken as time-conditioned unless it has ``time_agnostic = True``.
    """
    from .schedules import get_schedule

    schedule = get_schedule(schedule)
    if isinstance(model, Denoiser):
        if mask_id is not None:
            model.mask_id = int(mask_id)
        return model
    tokenizer = None
    if isinstance(model, str):
        name = local_path_or_hub_name(model, "model")
        model = _load_denoiser(name, trust_remote_code)
        tokenizer = _load_tokenizer(name, trust_remote_code)
    if isinstance(model, torch.nn.Module):
        if device is not None or dtype is not None:
            model = model.to(device=device, dtype=dtype)
        model.eval()
        if hasattr(model, "config"):
            return _hf_denoiser(model, mask_id, tokenizer, schedule)
    if not callable(model):
        raise TypeError(f"model must be a HuggingFace model, its name or path, or a callable; got {type(model).__name__}")
    if mask_id is None:
        mask_id = getattr(model, "mask_id", None)
    if mask_id is None:
        raise ValueError("no mask id known for a callable denoiser: pass mask_id=")
    try:
        takes_mask = "attention_mask" in inspect.signature(model).parameters
    except (TypeError, ValueError):
        takes_mask = False
    return Denoiser(model, mask_id, time_conditioned=not getattr(model, "time_agnostic", False),
                    tokenizer=getattr(model, "tokenizer", None), max_positions=getattr(model, "max_positions", None),
                    name=getattr(model, "__name__", type(model).__name__), takes_attention_mask=takes_mask,
                    shifted=bool(getattr(model, "logits_shift", False)))


class Energy:
    """An energy ``E(x0, x_t, log_q) -> [N]``: EDLM weights candidates by ``exp(-E / is_temperature)``.

    Parameters
    ----------
    fn : callable, optional
        ``fn(x0 [N, L], x_t [N, L], log_q [N]) -> E [N]``; subclasses override :meth:`energy` instead.

    Examples
    --------
    >>> import torch
    >>> e = Energy(lambda x0, x_t, log_q: x0.float().sum(1))
    >>> e(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long), torch.zeros(2)).tolist()
    [3.0, 3.0]
    """

    vocab_size: Optional[int] = None
    max_positions: Optional[int] = None
    takes_attention = False  # whether energy() takes attention= (the positions a prompt's padding hides)

    def __init__(self, fn: Optional[Callable] = None):
        self.fn = fn

    def energy(self, x0, x_t, log_q):
        if self.fn is None:
            raise TypeError("Energy needs a function, or a subclass that overrides energy()")
        return self.fn(x0, x_t, log_q)

    @torch.no_grad()
    def __call__(self, x0: torch.Tensor, x_t: torch.Tensor, log_q: torch.Tensor,
                 attention: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``attention`` [N, L] bool, optional: False at a prompt's left padding, which an autoregressive energy
        neither reads nor scores; other energies see the rows as they are."""
        attention = check_attention(x0, attention)
        takes = attention is not None and self.takes_attention
        E = self.energy(x0, x_t, log_q, attention=attention) if takes else self.energy(x0, x_t, log_q)
        if not isinstance(E, torch.Tensor) or E.shape != (x0.shape[0],):
            raise ValueError(f"energy must return a Tensor [N] = [{x0.shape[0]}], got "
                             f"{tuple(E.shape) if isinstance(E, torch.Tensor) else type(E).__name__}")
        return E.double()


def check_attention(x: torch.Tensor, attention: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """``attention`` as given, if it is None or a bool tensor shaped like ``x`` (True where a token is visible)."""
    if attention is None:
        return None
    if not isinstance(attention, torch.Tensor) or attention.dtype != torch.bool or attention.shape != x.shape:
        got = f"{attention.dtype} {tuple(attention.shape)}" if isinstance(attention, torch.Tensor) else \
            type(attention).__name__
        raise ValueError(f"attention must be a bool Tensor shaped like the tokens {tuple(x.shape)}, got {got}")
    return attention


class LogLikelihoodEnergy(Energy):
    """The exact EDLM energy of any model with a log-likelihood: ``E = -log p(x0) + log q(x0 | x_t)``.

    Weights ``p(x0) / q(x0 | x_t)`` make the resampling exact self-normalized importance sampling of
    ``p(x0 | x_t)``.

    Parameters
    ----------
    log_prob : callable
        ``log_prob(x0 [N, L]) -> [N]`` log-likelihoods.
    """

    def __init__(self, log_prob: Callable):
        super().__init__()
        self.log_prob = log_prob

    def energy(self, x0, x_t, log_q):
        return -self.log_prob(x0).double() + log_q.double()


class AutoregressiveEnergy(Energy):
    """What the autoregressive energies share: ``E = -log p_AR(x0) + log q(x0 | x_t)`` over every position, or
    (``positions="masked"``) over those masked in ``x_t``.  Subclasses give ``log_prob(x0, weights)``."""

    positions = "all"
    mask_id: Optional[int] = None  # set by the sampler; needed for positions="masked"
    takes_attention = True

    def energy(self, x0, x_t, log_q, attention=None):
        weights = None
        if self.positions == "masked":
            if self.mask_id is None:
                raise ValueError("energy_positions='masked' needs the denoiser's mask id (set energy.mask_id)")
            weights = x_t == self.mask_id
        if attention is not None:  # padding is never scored
            weights = attention if weights is None else weights & attention
            return -self.log_prob(x0, weights, attention=attention) + log_q.double()
        return -self.log_prob(x0, weights) + log_q.double()

    def window_logits(self, x: torch.Tensor, positions: Optional[torch.Tensor] = None,
                      attention: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits (any normalization) whose softmax is :meth:`log_probs`' conditionals: what a speculative window
        reads when whole rows are re-read.  These are the log-probabilities themselves."""
        return self.log_probs(x, positions, attention=attention)

    def conditionals(self, x: torch.Tensor, start: int, particles: int = 1, attention: Optional[torch.Tensor] = None):
        """The conditionals of a window moving left to right over ``x`` [B, L] (committed before ``start``), each
        row repeated ``particles`` times: see :mod:`edlm_engine.ar_cache`.  This one re-reads whole rows."""
        from .ar_cache import RecomputedConditionals

        attention = check_attention(x, attention)
        seen = None if attention is None else attention.repeat_interleave(particles, 0)
        return RecomputedConditionals(self, x.shape[0] * particles, x.device, seen)

    @staticmethod
    def positions_of(x: torch.Tensor, positions: Optional[torch.Tensor], device) -> torch.Tensor:
        """The [N, P] positions in [0, L) a ``log_probs`` call asks for (every position when None); the shape is
        checked here, the range by the indexing (a check of values would sync the device every step)."""
        N, L = x.shape
        if positions is None:
            return torch.arange(L, device=device).expand(N, L)
        if (not isinstance(positions, torch.Tensor) or positions.dim() != 2 or positions.shape[0] != N
                or positions.dtype.is_floating_point or positions.dtype == torch.bool):
            got = tuple(positions.shape) if isinstance(positions, torch.Tensor) else type(positions).__name__
            raise ValueError(f"positions must be an integer [N={N}, P] tensor, got {got}")
        return positions.to(device)


class AREnergy(AutoregressiveEnergy):
    """An autoregressive model given by its aligned conditionals: ``fn(x [N, L]) -> [N, L, V]``, entry
    ``[n, j, v]`` being ``log p(x_j = v | x_<j)`` (the first position conditioned on nothing).

    As an EDLM energy it is exact: ``E = -sum_j log p(x0_j | x0_<j) + log q(x0 | x_t)``, over every position
    (``positions="all"``) or only those masked in ``x_t`` (``"masked"``, the reference code's variant).  The
    conditionals themselves are what a speculative sampler verifies drafts against (:meth:`log_probs`).

    Parameters
    ----------
    fn : callable
        ``fn(x) -> [N, L, V]`` log-probabilities (each row over V sums to 1 in probability).
    positions : {"all", "masked"}
    vocab_size : int, optional
        V, when known before the first call (checked against the denoiser's ids).
    mask_id : int, optional
        The mask id, for ``positions="masked"`` outside ``sample()`` (which sets the denoiser's).

    Examples
    --------
    >>> import torch
    >>> from edlm_engine.oracle import HMMLanguage
    >>> lang = HMMLanguage.random(n_states=2, vocab_size=3, seed=0)
    >>> energy = AREnergy(lang.ar_log_probs, vocab_size=3)
    >>> x = lang.sample(2, 4, seed=1)
    >>> bool(torch.allclose(energy.log_prob(x), lang.log_prob(x)))
    True
    """

    def __init__(self, fn: Callable, *, positions: str = "all", vocab_size: Optional[int] = None,
                 mask_id: Optional[int] = None):
        super().__init__()
        if not callable(fn):
            raise TypeError(f"AREnergy needs a callable fn(x [N, L]) -> [N, L, V], got {type(fn).__name__}")
        if positions not in ("all", "masked"):
            raise ValueError(f"energy_positions must be 'all' or 'masked', got {positions!r}")
        if vocab_size is not None:
            vocab_size = ops._check_int("vocab_size", vocab_size, 1)
        if mask_id is not None:
            mask_id = ops._check_int("mask_id", mask_id, 0)
        self.fn, self.positions, self.vocab_size = fn, positions, vocab_size
        self.mask_id = mask_id  # the sampler sets the denoiser's; needed for positions="masked"

    @torch.no_grad()
    def log_probs(self, x: torch.Tensor, positions: Optional[torch.Tensor] = None,
                  attention: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The aligned conditionals of ``x``: ``[N, L, V]``, ``[n, j, v] = log p(x_j = v | x_<j)``; with
        ``positions`` [N, P], only those: ``[N, P, V]``.  ``fn`` reads whole rows: ``attention`` cannot hide a
        prompt's padding from it (accepted for the interface's sake)."""
        out = self.fn(x)
        if not isinstance(out, torch.Tensor) or out.dim() != 3 or out.shape[:2] != x.shape:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"AREnergy's fn must return [N, L, V] log-probabilities for x {tuple(x.shape)}, got {shape}")
        if positions is None:
            return out
        pos = self.positions_of(x, positions, out.device)
        return out[torch.arange(x.shape[0], device=out.device)[:, None], pos]

    def log_prob(self, x0: torch.Tensor, weights: Optional[torch.Tensor] = None,
                 attention: Optional[torch.Tensor] = None) -> torch.Tensor:
        """sum_j weights_j log p(x0_j | x0_<j) in float64, [N].  ``fn`` reads whole rows, so ``attention`` (a
        prompt's padding) cannot hide anything from it: give padded positions weight 0 to leave them unscored."""
        lp = self.log_probs(x0).gather(-1, x0[..., None].to(torch.int64)).squeeze(-1).double()
        return (lp if weights is None else lp * weights.double()).sum(1)


class CausalLMEnergy(AutoregressiveEnergy):
    """EDLM-AR energy from a HuggingFace causal LM, scored without materializing its full logits.

    ``E = -log p_AR(x0) + log q(x0 | x_t)``, where ``log p_AR`` comes from the model's last hidden state
    and output embedding through :func:`edlm_engine.ops.lm_head_logprob`.

    Parameters
    ----------
    model : transformers.PreTrainedModel or str
        A causal LM or its name/path.
    positions : {"all", "masked"}
        "all" (exact) sums log p_AR over every position; "masked" only over positions masked in x_t.
    bos_id : int, optional
        Default: the tokenizer's or config's BOS.  Decided per sequence: a sequence that starts with BOS is
        scored as it is (its first token is the context), any other gets BOS in front (every token scored), so a
        sequence's score never depends on the other sequences of its batch.
    max_batch : int, optional
        Candidate sequences per forward pass (default: all at once).
    """

    def __init__(self, model, *, positions: str = "all", bos_id: Optional[int] = None, max_batch: Optional[int] = None,
                 trust_remote_code: bool = False, device=None, dtype=None):
        super().__init__()
        tokenizer = None
        if isinstance(model, str):
            import transformers

            name = local_path_or_hub_name(model, "energy")
            model = transformers.AutoModelForCausalLM.from_pretrained(name, trust_remote_code=trust_remote_code)
            tokenizer = _load_tokenizer(name, trust_remote_code)
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "get_output_embeddings"):
            raise TypeError(f"energy model must be a HuggingFace causal LM, got {type(model).__name__}")
        if positions not in ("all", "masked"):
            raise ValueError(f"energy_positions must be 'all' or 'masked', got {positions!r}")
        if device is not None or dtype is not None:
            model = model.to(device=device, dtype=dtype)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.head = model.get_output_embeddings()
        if self.head is None or not hasattr(self.head, "weight"):
            raise TypeError(f"{type(model).__name__} has no output embedding to score with")
        self.base = model.base_model
        self.positions = positions
        config = model.config
        self.vocab_size = self.head.weight.shape[0]
        self.max_positions = _config_int(config, "max_position_embeddings", "n_positions")
        if bos_id is None and tokenizer is not None:
            bos_id = getattr(tokenizer, "bos_token_id", None)
        if bos_id is None:
            bos_id = _config_int(config, "bos_token_id")
        self.bos_id = bos_id if bos_id is not None and 0 <= bos_id < self.vocab_size else None
        self.max_batch = max_batch
        self.mask_id: Optional[int] = None  # set by the sampler; needed for positions="masked"

    def _inputs(self, x0, weights, attention=None):
        """(ids, targets, weights, seen, has_bos, first) of the forward pass: position j of ``ids`` predicts
        ``targets[:, j]``; ``seen`` is False at hidden positions (a prompt's left padding, given as BOS: its id
        may be none of ours); ``has_bos`` [N, 1]: the row's first visible token, at column ``first``, is BOS."""
        w = torch.ones(x0.shape, dtype=torch.float64, device=x0.device) if weights is None else weights.double()
        attention = check_attention(x0, attention)
        seen = torch.ones_like(x0, dtype=torch.bool) if attention is None else attention.to(x0.device)
        w = torch.where(seen, w, 0.0)
        first = seen.long().argmax(1, keepdim=True)  # each row's first visible token
        if self.bos_id is None:  # which has no context: it is not scored
            w = w.scatter(1, first, 0.0)
            return torch.where(seen, x0, x0.gather(1, first)), x0[:, 1:], w[:, 1:], seen, None, first
        has_bos = x0.gather(1, first) == self.bos_id
        w = w.scatter(1, first, torch.where(has_bos, 0.0, w.gather(1, first)))  # a row's own BOS is context
        x0 = torch.where(seen, x0, self.bos_id)
        pad = torch.full_like(x0[:, :1], self.bos_id)
        on = torch.ones_like(seen[:, :1])
        # A row that starts with BOS moves left and takes a pad on the right (scored with weight 0, and unseen by
        # the earlier positions of a causal model); any other row gets BOS in front.
        ids = torch.where(has_bos, torch.cat([x0, pad], 1), torch.cat([pad, x0], 1))
        seen = torch.where(has_bos, torch.cat([seen, on], 1), torch.cat([on, seen], 1))
        w = torch.where(has_bos, torch.cat([w[:, 1:], torch.zeros_like(w[:, :1])], 1), w)
        return ids, ids[:, 1:], w, seen, has_bos, first

    def _hidden(self, ids, seen, padded: bool):
        """The base model's last hidden states; with padding, positions count the visible tokens only, so a padded
        row reads as it would alone."""
        if not padded:
            return self.base(input_ids=ids).last_hidden_state
        pos = (seen.long().cumsum(1) - 1).clamp(min=0)
        return self.base(input_ids=ids, attention_mask=seen.long(), position_ids=pos).last_hidden_state

    def _log_p(self, x0, weights, attention=None):
        device = self.head.weight.device
        ids, targets, w, seen, _, _ = self._inputs(x0.to(device), None if weights is None else weights.to(device),
                                                   attention)
        hidden = self._hidden(ids, seen, attention is not None)[:, : targets.shape[1]]
        if hidden.dtype != self.head.weight.dtype:
            hidden = hidden.to(self.head.weight.dtype)
        return ops.lm_head_logprob(hidden.contiguous(), self.head.weight, targets, w,
                                   bias=getattr(self.head, "bias", None))

    @torch.no_grad()
    def log_probs(self, x: torch.Tensor, positions: Optional[torch.Tensor] = None,
                  attention: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Aligned conditionals, float64: ``[n, j, v] = log p(x_j = v | x_<j)`` for every position ([N, L, V]) or
        for ``positions`` [N, P] only ([N, P, V]: the head runs on those hidden states alone).  BOS per row as in
        :meth:`log_prob` (a row that starts with BOS gives it probability 1 there); ``attention`` [N, L] hides a
        prompt's left padding as there.  What the speculative sampler verifies drafts against."""
        return torch.log_softmax(self.window_logits(x, positions, attention).double(), -1)

    @torch.no_grad()
    def window_logits(self, x: torch.Tensor, positions: Optional[torch.Tensor] = None,
                      attention: Optional[torch.Tensor] = None) -> torch.Tensor:
        """What :meth:`log_probs` normalizes: the head's logits at ``positions`` ([N, P, V], the model's dtype), a
        row's own BOS given (0 there, -inf elsewhere).  The speculative sampler's kernel normalizes them itself."""
        if self.bos_id is None:
            raise ValueError(f"{type(self.model).__name__} has no BOS token to condition the first position on")
        device = self.head.weight.device
        x = x.to(device)
        N = x.shape[0]
        pos = self.positions_of(x, positions, device)
        ids, _, _, seen, has_bos, first = self._inputs(x, None, attention)
        hidden = self._hidden(ids, seen, attention is not None)  # hidden p predicts ids[p + 1]
        at = (pos - has_bos.long()).clamp(min=0)  # a BOS row's x_j is predicted by hidden j - 1
        out = self.head(hidden[torch.arange(N, device=device)[:, None], at].to(self.head.weight.dtype))
        given = has_bos & (pos == first)  # in place: [N, P] rows, no second [N, P, V] tensor
        out.masked_fill_(given[..., None], float("-inf"))
        out[..., self.bos_id].masked_fill_(given, 0.0)
        return out

    def conditionals(self, x: torch.Tensor, start: int, particles: int = 1, attention: Optional[torch.Tensor] = None):
        """With the model's key/value cache where it is one plain tensor pair per layer (else as the base
        class): the prefix is encoded once, each round reads only the window."""
        from .ar_cache import CachedConditionals

        if self.bos_id is None:
            raise ValueError(f"{type(self.model).__name__} has no BOS token to condition the first position on")
        if not CachedConditionals.supports(self.model):
            return super().conditionals(x, start, particles, attention)
        return CachedConditionals(self, x, start, particles, check_attention(x, attention))

    @torch.no_grad()
    def log_prob(self, x0: torch.Tensor, weights: Optional[torch.Tensor] = None,
                 attention: Optional[torch.Tensor] = None) -> torch.Tensor:
        """log p_AR(x0) summed over positions (with ``weights``), float64 [N].  ``attention`` [N, L]: False at a
        prompt's left padding, which the model then neither reads nor scores (a padded row scores as it would
        alone)."""
        step = self.max_batch or x0.shape[0]
        parts = [self._log_p(*(None if t is None else t[i : i + step] for t in (x0, weights, attention)))
                 for i in range(0, x0.shape[0], step)]
        return torch.cat(parts).to(x0.device)


def as_energy(energy, *, positions: Optional[str] = None, trust_remote_code: bool = False, device=None, dtype=None):
    """An :class:`Energy` from None, an Energy, a HuggingFace causal LM, its name/path, or a callable.

    ``positions`` ("all" or "masked") applies to autoregressive energies; None keeps the setting of a
    :class:`CausalLMEnergy` or :class:`AREnergy` given here and gives "all" to one built here.
    """
    if energy is None or isinstance(energy, Energy):
        if isinstance(energy, AutoregressiveEnergy) and positions is not None:
            energy.positions = positions
        return energy
    if isinstance(energy, (str, torch.nn.Module)):
        return CausalLMEnergy(energy, positions=positions or "all", trust_remote_code=trust_remote_code,
                              device=device, dtype=dtype)
    if callable(energy):
        return Energy(energy)
    raise TypeError(f"energy must be None, an Energy, a HuggingFace causal LM or its name/path; got {type(energy).__name__}")


def check_vocabularies(denoiser: Denoiser, energy, *, allow_mismatch: bool = False) -> None:
    """Refuse an energy whose tokenizer gives the denoiser's tokens other ids.

    Equal vocabulary sizes say nothing (RoBERTa and GPT-2, BERT and Qwen2 differ in what the ids mean); the
    token-to-id maps are compared where both models have a tokenizer.  Tokens only one side knows (a mask
    token added to a GPT-2 vocabulary, say) are fine; a shared token with two ids, or too little overlap, is not.
    """
    tok_d, tok_e = denoiser.tokenizer, getattr(energy, "tokenizer", None)
    if allow_mismatch or tok_d is None or tok_e is None:
        return
    vocab_d, vocab_e = tok_d.get_vocab(), tok_e.get_vocab()
    shared = vocab_d.keys() & vocab_e.keys()
    moved = sorted(t for t in shared if vocab_d[t] != vocab_e[t])
    if moved or len(shared) < len(vocab_d) // 2:
        example = f"e.g. {moved[0]!r} is {vocab_d[moved[0]]} for the denoiser and {vocab_e[moved[0]]} for the energy" \
            if moved else f"they share only {len(shared)} of the denoiser's {len(vocab_d)} tokens"
        raise ValueError(
            f"the energy's tokenizer ({type(tok_e).__name__}) does not map tokens to the ids of the denoiser's "
            f"({type(tok_d).__name__}): {len(moved)} shared tokens have other ids ({example}), so the energy would "
            "score other text than the candidates; use models that share a tokenizer, or pass "
            "allow_vocab_mismatch=True if you know the ids agree where it matters"
        )
