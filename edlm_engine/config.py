"""Every sampling option in one place: :class:`SampleConfig`.

``edlm_engine.sample``, the ``edlm-engine sample`` command line (one ``--field-name`` flag per field, with the
default and help line given here) and the JSONL settings record (``to_dict()``) all read their options from this
class, so an option is declared once.
"""

from __future__ import annotations

import dataclasses
import difflib
import operator
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional, Tuple

from .ops import PRECISIONS

__all__ = ["SampleConfig", "GROUPS"]

GROUPS = ("length", "prompt", "sampler", "decoding", "EDLM", "speculative", "randomness", "precision", "models",
          "batching")
SELECTIONS = ("snis", "argmax")
SCHEDULES = ("loglinear", "linear")
ENERGY_POSITIONS = ("all", "masked")
DTYPES = ("float32", "float16", "bfloat16")


def _opt(default, group: str, help: str, *, cli: Optional[dict] = None, affects_samples: bool = True):
    """A config field: its default, role, help line and command-line form.

    ``affects_samples=False`` marks options that change how sampling runs but never which tokens come out
    (batch size, device, progress bar): a JSONL file may be resumed with other values of those.
    """
    return field(default=default, metadata=dict(group=group, help=help, cli=cli or {}, affects_samples=affects_samples))


@dataclass(frozen=True)
class SampleConfig:
    """The options of :func:`edlm_engine.sample`, grouped by role and validated at construction.

    Any field can also be passed to ``sample()`` as a keyword; ``SampleConfig.from_dict(cfg.to_dict())`` gives
    the same config back, and JSON holds ``to_dict()`` as is.

    Examples
    --------
    >>> from edlm_engine import SampleConfig
    >>> cfg = SampleConfig(steps=64, is_size=4)
    >>> cfg.replace(seed=3).seed, SampleConfig.from_dict(cfg.to_dict()) == cfg
    (3, True)
    >>> SampleConfig(steps=0)
    Traceback (most recent call last):
    ...
    ValueError: SampleConfig.steps must be an int >= 1, got 0
    """

    # --- length: what is generated
    seq_len: Optional[int] = _opt(None, "length", "tokens per sequence (default: the template's length, else the "
                                  "denoiser's maximum positions)", cli=dict(type=int))
    prefix: Optional[List] = _opt(None, "length", "fixed leading token ids: one row for every sequence, or one row "
                                  "per sequence", cli=dict(type=int, nargs="+", metavar="ID"))
    template: Optional[List] = _opt(None, "length", "infilling: token ids with the mask id where to generate (one row, "
                                    "or one per sequence); sets seq_len", cli=dict(type=int, nargs="+", metavar="ID"))

    # --- prompt: instruct models (LLaDA, Dream): a prompt, then gen_length tokens in blocks, left to right
    prompt: Optional[Any] = _opt(None, "prompt", "prompt(s): text or a list of texts (with a tokenizer), token ids or a "
                                 "list of them; sample i takes prompt i modulo their number; all are left-padded to "
                                 "the longest", cli=dict(type=str, nargs="+", metavar="TEXT"))
    chat_template: bool = _opt(False, "prompt", "wrap text prompts in the tokenizer's chat template (a user turn and "
                               "the generation prompt)", cli=dict(type=bool))
    gen_length: Optional[int] = _opt(None, "prompt", "tokens generated after the prompt (default: 128 with a prompt, as "
                                     "LLaDA; without one, seq_len)", cli=dict(type=int))
    block_length: Optional[int] = _opt(None, "prompt", "semi-autoregressive blocks of this many tokens, decoded left "
                                       "to right, each with steps / blocks steps (default: one block)",
                                       cli=dict(type=int))

    # --- sampler: how the reverse process runs
    sampler: str = _opt("ancestral", "sampler", "sampling strategy: 'ancestral' (steps from t = 1 to 0) or "
                        "'first_hitting' (one exact token per step)", cli=dict(type=str))
    steps: int = _opt(256, "sampler", "ancestral steps from t = 1 to t = 0", cli=dict(type=int))
    schedule: str = _opt("loglinear", "sampler", "noise schedule: 'loglinear' (MDLM: alpha_t = 1 - (1 - eps) t) or "
                         "'linear' (alpha_t = 1 - t)", cli=dict(choices=SCHEDULES))
    eps: float = _opt(1e-3, "sampler", "floor of the log-linear schedule (MDLM's own code uses 1e-5)",
                      cli=dict(type=float))
    cache: bool = _opt(True, "sampler", "reuse the denoiser output while no sequence changed (time-agnostic "
                       "denoisers only; exact)", cli=dict(type=bool))
    temperature: float = _opt(1.0, "sampler", "temperature of the denoiser's categorical; 0 is argmax",
                              cli=dict(type=float))

    # --- decoding: what commits at a step, and the distribution it draws from
    unmasking: str = _opt("random", "decoding", "which masked positions commit at a step: 'random' (the exact "
                          "ancestral step), or the highest scored by 'confidence' (p of the draw, LLaDA), 'margin' "
                          "(p_top1 - p_top2) or 'entropy' (lowest first), as many as LLaDA's schedule gives",
                          cli=dict(type=str))
    threshold: Optional[float] = _opt(None, "decoding", "commit every position whose p of the draw is at least this "
                                      "(Fast-dLLM), and at least the best one; with a scored unmasking rule",
                                      cli=dict(type=float))
    entropy_bound: Optional[float] = _opt(None, "decoding", "commit, lowest entropy first, the longest run whose "
                                          "entropy sum minus its largest entropy stays within this (EB-Sampler)",
                                          cli=dict(type=float))
    top_k: Optional[int] = _opt(None, "decoding", "draw only among the k most likely tokens (ties kept)",
                                cli=dict(type=int))
    top_p: Optional[float] = _opt(None, "decoding", "draw only from the smallest most-likely set whose probability "
                                  "reaches top_p", cli=dict(type=float))
    min_p: Optional[float] = _opt(None, "decoding", "draw only tokens with p >= min_p * p_max", cli=dict(type=float))
    cfg_scale: float = _opt(0.0, "decoding", "classifier-free guidance s: logits u + (s + 1)(c - u), u with the prompt "
                            "masked (LLaDA); 0 is off", cli=dict(type=float))
    eos_id: Optional[int] = _opt(None, "decoding", "end of sequence: after a block holding it, later positions become "
                                 "it and the sequence is finished (default: the tokenizer's with a prompt; -1: none)",
                                 cli=dict(type=int))
    logits_shift: Optional[bool] = _opt(None, "decoding", "the denoiser's output i predicts position i + 1 (Dream); "
                                        "default: from the model type", cli=dict(type=bool))

    # --- EDLM: energy-based importance sampling
    is_size: int = _opt(2, "EDLM", "candidates per sequence at an importance-sampling step (k)", cli=dict(type=int))
    is_window: Tuple[float, float] = _opt((0.8, 1.0), "EDLM", "interval [lo, hi] of t where importance sampling "
                                          "runs", cli=dict(type=float, nargs=2, metavar=("LO", "HI")))
    is_temperature: float = _opt(1.0, "EDLM", "temperature of the importance weights softmax(-E / T)",
                                 cli=dict(type=float))
    energy_positions: Optional[str] = _opt(None, "EDLM", "positions a causal-LM energy scores: 'all' (exact) or "
                                           "'masked' (the reference's carry-over variant); default: 'all', or the "
                                           "setting of a CausalLMEnergy you built", cli=dict(choices=ENERGY_POSITIONS))

    # --- speculative: the denoiser drafts, the AR energy verifies (PoE-Bridge), sampler="speculative"
    particles: int = _opt(1, "speculative", "K drafts per sequence and round; one segment is kept by `selection`",
                          cli=dict(type=int))
    poe_weight: float = _opt(0.0, "speculative", "w of the token-level target softmax((w l_D + (1 - w) l_AR) / T); 0 "
                             "is the AR model itself, sampled exactly", cli=dict(type=float))
    selection: str = _opt("snis", "speculative", "how each round keeps one of the K segments: 'snis' (resampling by "
                          "the importance weights p_AR / target of its tokens, consistent for p_AR) or 'argmax' (the "
                          "released code's per-round best-of-K by mean log p_AR - log q: biased, for comparisons)",
                          cli=dict(choices=SELECTIONS))
    verify_window: int = _opt(8, "speculative", "W: drafted tokens per round, verified left to right",
                              cli=dict(type=int))
    lookahead: Optional[int] = _opt(None, "speculative", "masked positions the denoiser sees after the committed ones "
                                    "(hidden by the attention mask beyond; default: the rest of the sequence)",
                                    cli=dict(type=int))

    # --- randomness
    seed: int = _opt(0, "randomness", "random seed: sample i depends only on (seed, first_index + i)",
                     cli=dict(type=int))
    first_index: int = _opt(0, "randomness", "global index of the first sample, to split or resume a run",
                            cli=dict(type=int), affects_samples=False)

    # --- precision
    precision: str = _opt("fp64", "precision", "'fp64' draws exactly; 'fp32-gumbel' reproduces the reference "
                          "code's truncated float32 Gumbel-max sampler, for comparisons", cli=dict(choices=PRECISIONS))
    dtype: Optional[str] = _opt(None, "precision", "dtype of models loaded by name or path (default: as saved)",
                                cli=dict(choices=DTYPES))

    # --- models: how the denoiser and the energy are read
    mask_id: Optional[int] = _opt(None, "models", "mask token id (default: the tokenizer's or the config's)",
                                  cli=dict(type=int))
    trust_remote_code: bool = _opt(False, "models", "let transformers run a checkpoint's own modelling code",
                                   cli=dict(type=bool))
    allow_vocab_mismatch: bool = _opt(False, "models", "score with an energy whose tokenizer maps tokens to other "
                                      "ids than the denoiser's (the likelihood is then of other text)",
                                      cli=dict(type=bool))

    # --- batching: how the work is cut, never what comes out
    batch_size: Optional[int] = _opt(None, "batching", "sequences per batch (default: all n at once)",
                                     cli=dict(type=int), affects_samples=False)
    device: Optional[str] = _opt(None, "batching", "device, e.g. 'cpu' or 'cuda' (default: the model's)",
                                 cli=dict(type=str), affects_samples=False)
    progress: bool = _opt(False, "batching", "show a progress bar over the steps", cli=dict(type=bool),
                          affects_samples=False)

    def __post_init__(self):
        for f in fields(self):
            check = _CHECKS.get(f.name)
            if check is not None:
                object.__setattr__(self, f.name, check(f.name, getattr(self, f.name)))
        lo, hi = self.is_window
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"SampleConfig.is_window must satisfy 0 <= lo <= hi <= 1, got {self.is_window!r}")
        if self.threshold is not None and self.entropy_bound is not None:
            raise ValueError("SampleConfig.threshold and SampleConfig.entropy_bound both decide how many positions "
                             "commit; set one")
        if (self.threshold is not None or self.entropy_bound is not None) and self.unmasking == "random":
            raise ValueError("SampleConfig.unmasking must be a scored rule ('confidence', 'margin' or 'entropy') "
                             "for threshold or entropy_bound to rank positions")
        if self.cfg_scale > 0 and self.prompt is None:
            raise ValueError(f"SampleConfig.cfg_scale = {self.cfg_scale} guides against the same input with the prompt "
                             "masked: it needs a prompt")
        if self.prompt is not None and (self.prefix is not None or self.template is not None or self.seq_len):
            raise ValueError("SampleConfig.prompt sets the sequence (prompt, then gen_length tokens): leave prefix, "
                             "template and seq_len unset")
        if self.template is not None and self.seq_len is not None and len(first_row(self.template)) != self.seq_len:
            raise ValueError(f"SampleConfig.template has length {len(first_row(self.template))} but seq_len is "
                             f"{self.seq_len}")

    def replace(self, **overrides) -> "SampleConfig":
        """A copy with some fields changed; an unknown name is a ``TypeError`` naming it."""
        names = {f.name for f in fields(self)}
        for key in overrides:
            if key not in names:
                near = difflib.get_close_matches(key, sorted(names), n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise TypeError(f"unknown sampling option {key!r}{hint}; the options are the fields of SampleConfig")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> Dict[str, Any]:
        """Every field, JSON-safe (tuples become lists)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "SampleConfig":
        """The config of a ``to_dict()`` (missing fields take their defaults; unknown ones are an error)."""
        return cls().replace(**dict(data))

    def sample_settings(self) -> Dict[str, Any]:
        """``to_dict()`` without the fields that never change the tokens: what a resumed run must match."""
        return {k: v for k, v in self.to_dict().items() if _FIELD[k].metadata["affects_samples"]}


_FIELD = {f.name: f for f in fields(SampleConfig)}


def _jsonable(value):
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def first_row(rows):
    """The first row of token ids given as one row or as one row per sequence."""
    return rows[0] if rows and isinstance(rows[0], list) else rows


def _int(name, value, low=None, optional=False, high=None):
    if value is None and optional:
        return None
    try:
        if isinstance(value, bool):
            raise TypeError
        value = operator.index(value)  # ints and numpy integers; not floats
    except TypeError:
        raise ValueError(f"SampleConfig.{name} must be an int{' or None' if optional else ''}, got {value!r}") from None
    if low is not None and value < low:
        raise ValueError(f"SampleConfig.{name} must be an int >= {low}, got {value}")
    if high is not None and value >= high:
        raise ValueError(f"SampleConfig.{name} must be an int below {high}, got {value}")
    return value


def _number(name, value, low=0.0):
    if isinstance(value, (bool, str)) or not hasattr(value, "__float__"):
        raise ValueError(f"SampleConfig.{name} must be a number, got {value!r}")
    value = float(value)
    if not (low <= value < float("inf")):
        raise ValueError(f"SampleConfig.{name} must be a finite number >= {low}, got {value}")
    return value


def _fraction(name, value):
    value = _number(name, value)
    if value >= 1.0:
        raise ValueError(f"SampleConfig.{name} must be a number in [0, 1), got {value}")
    return value


def _choice(name, value, choices, optional=False):
    if value is None and optional:
        return None
    if value not in choices:
        raise ValueError(f"SampleConfig.{name} must be one of {choices}{' or None' if optional else ''}, got {value!r}")
    return value


def _bool(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"SampleConfig.{name} must be True or False, got {value!r}")
    return value


def _window(name, value):
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"SampleConfig.{name} must be a pair (lo, hi), got {value!r}") from None
    return (lo, hi)


def _token_rows(name, value):
    """None, one row of token ids or one row per sequence, as lists of ints (tensors and arrays accepted)."""
    if value is None:
        return None
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"SampleConfig.{name} must be token ids: one row [P] or one row per sequence [n, P], "
                         f"got {value!r}")
    nested = isinstance(value[0], (list, tuple))
    rows = [[_int(name, v, 0) for v in r] for r in (value if nested else [value])]
    if len({len(r) for r in rows}) != 1:
        raise ValueError(f"SampleConfig.{name} rows must all have the same length")
    return rows if nested else rows[0]


def _prompt(name, value):
    """None, a text, a list of texts, one row of token ids or a list of rows (tensors accepted)."""
    if value is None or isinstance(value, str):
        return value
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return list(value)
    try:
        nested = isinstance(value, (list, tuple)) and value and isinstance(value[0], (list, tuple))
        return [_token_rows(name, r) for r in value] if nested else _token_rows(name, value)  # lengths may differ
    except ValueError:
        raise ValueError(f"SampleConfig.{name} must be a text, a list of texts, token ids or a list of token-id rows, "
                         f"got {value!r}") from None


def _optional(check):
    return lambda name, value: None if value is None else check(name, value)


def _probability(name, value, open_low=False):
    value = _number(name, value)
    if value > 1.0 or (open_low and value == 0.0):
        raise ValueError(f"SampleConfig.{name} must be in {'(0, 1]' if open_low else '[0, 1]'}, got {value}")
    return value


def _unmasking(name, value):
    from .samplers import UNMASKING  # the rules' registry is the one list of their names

    return _choice(name, value, tuple(UNMASKING))


def _sampler(name, value):
    from .samplers import SAMPLERS  # the registry is the one list of sampler names

    return _choice(name, value, tuple(SAMPLERS))


def _device(name, value):
    if value is None:
        return None
    import torch

    try:
        return str(torch.device(value))
    except (RuntimeError, TypeError):
        raise ValueError(f"SampleConfig.{name} must name a torch device such as 'cpu' or 'cuda', got {value!r}") from None


_CHECKS = dict(
    seq_len=lambda n, v: _int(n, v, 1, optional=True),
    prefix=_token_rows,
    template=_token_rows,
    prompt=_prompt,
    chat_template=_bool,
    gen_length=lambda n, v: _int(n, v, 1, optional=True),
    block_length=lambda n, v: _int(n, v, 1, optional=True),
    unmasking=_unmasking,
    threshold=_optional(lambda n, v: _probability(n, v, open_low=True)),
    entropy_bound=_optional(_number),
    top_k=lambda n, v: _int(n, v, 1, optional=True),
    top_p=_optional(lambda n, v: _probability(n, v, open_low=True)),
    min_p=_optional(_probability),
    cfg_scale=_number,
    eos_id=lambda n, v: _int(n, v, -1, optional=True),
    logits_shift=_optional(_bool),
    particles=lambda n, v: _int(n, v, 1),
    poe_weight=_probability,
    selection=lambda n, v: _choice(n, v, SELECTIONS),
    verify_window=lambda n, v: _int(n, v, 1),
    lookahead=lambda n, v: _int(n, v, 1, optional=True),
    sampler=_sampler,
    steps=lambda n, v: _int(n, v, 1),
    schedule=lambda n, v: _choice(n, v, SCHEDULES),
    eps=_fraction,
    cache=_bool,
    temperature=_number,
    is_size=lambda n, v: _int(n, v, 1),
    is_window=_window,
    is_temperature=_number,
    energy_positions=lambda n, v: _choice(n, v, ENERGY_POSITIONS, optional=True),
    seed=lambda n, v: _int(n, v, 0, high=2**63),
    first_index=lambda n, v: _int(n, v, 0, high=2**40),
    precision=lambda n, v: _choice(n, v, PRECISIONS),
    dtype=lambda n, v: _choice(n, v, DTYPES, optional=True),
    mask_id=lambda n, v: _int(n, v, 0, optional=True),
    trust_remote_code=_bool,
    allow_vocab_mismatch=_bool,
    batch_size=lambda n, v: _int(n, v, 1, optional=True),
    device=_device,
    progress=_bool,
)
