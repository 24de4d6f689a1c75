"""The sequences a ``sample()`` call starts from: prompt or prefix or template, padding, and the blocks to decode.

Without a prompt, a sequence is ``seq_len`` tokens: the template's (mask ids where it generates), or mask ids
after an optional prefix.  With a prompt (instruct models), it is the prompt, left-padded to the longest prompt
of the call, then ``gen_length`` mask ids; the padding is hidden from models that take an attention mask.  The
generated region (after the prompt or prefix) is cut into blocks of ``block_length`` tokens.
"""

from __future__ import annotations

from typing import List, Optional

import torch

from .config import SampleConfig, first_row
from .models import CausalLMEnergy, Denoiser
from .samplers import Layout

__all__ = ["build_layout", "end_of_sequence", "DEFAULT_GEN_LENGTH"]

DEFAULT_GEN_LENGTH = 128  # LLaDA's generate


def build_layout(denoiser: Denoiser, energy, cfg: SampleConfig, n: int, device) -> Layout:
    """The initial tokens of the ``n`` sequences (global indices ``cfg.first_index + i``) and their blocks."""
    if cfg.prompt is not None:
        x, attention, prompt_mask, start = _prompted(denoiser, cfg, n)
    else:
        x, start = _unprompted(denoiser, cfg, n), len(first_row(cfg.prefix)) if cfg.prefix is not None else 0
        attention = prompt_mask = None
    _check_length(denoiser, energy, x.shape[1])
    to = (lambda t: None if t is None else t.to(device))
    return Layout(x.to(device), _blocks(start, x.shape[1], cfg.block_length), to(attention), to(prompt_mask))


def end_of_sequence(denoiser: Denoiser, cfg: SampleConfig) -> Optional[int]:
    """eos_id as given (-1: none), else the tokenizer's when there is a prompt."""
    if cfg.eos_id is not None:
        return None if cfg.eos_id == -1 else cfg.eos_id
    if cfg.prompt is None or denoiser.tokenizer is None:
        return None
    return getattr(denoiser.tokenizer, "eos_token_id", None)


def _rows(name: str, rows, n: int, denoiser: Denoiser) -> torch.Tensor:
    """A [P] or [n, P] list of token ids as an int64 [n, P] tensor, each id a token the denoiser can read."""
    t = torch.tensor(rows, dtype=torch.int64)
    if t.dim() == 1:
        t = t.unsqueeze(0).expand(n, -1)
    if t.shape[0] != n:
        raise ValueError(f"{name} must have shape [P] or [n, P] with n = {n}, got {tuple(t.shape)}")
    _check_ids(denoiser, t, name)
    return t


def _unprompted(denoiser: Denoiser, cfg: SampleConfig, n: int) -> torch.Tensor:
    """Mask ids where something is generated; the template and the prefix where they say."""
    if cfg.template is not None:
        return _rows("template", cfg.template, n, denoiser).clone()
    seq_len = cfg.seq_len or denoiser.max_positions
    if seq_len is None:
        raise ValueError("seq_len is needed: the denoiser does not say how many positions it takes")
    x = torch.full((n, seq_len), denoiser.mask_id, dtype=torch.int64)
    if cfg.prefix is not None:
        prefix = _rows("prefix", cfg.prefix, n, denoiser)
        if prefix.shape[1] > seq_len:
            raise ValueError(f"prefix of length {prefix.shape[1]} is longer than seq_len {seq_len}")
        x[:, : prefix.shape[1]] = prefix
    return x


def _prompt_rows(denoiser: Denoiser, cfg: SampleConfig) -> List[List[int]]:
    """The prompts as token ids: texts through the tokenizer (and its chat template when asked)."""
    p = cfg.prompt
    texts = [p] if isinstance(p, str) else p if isinstance(p[0], str) else None
    if texts is None:
        return [p] if isinstance(p[0], int) else p
    tok = denoiser.tokenizer
    if tok is None:
        raise ValueError("prompt is text but the denoiser has no tokenizer: give the prompt as token ids")
    if cfg.chat_template:
        return [list(tok.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True,
                                             tokenize=True, return_dict=False)) for t in texts]
    return [list(tok(t)["input_ids"]) for t in texts]


def _pad_id(denoiser: Denoiser) -> int:
    tok = denoiser.tokenizer
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tok, name, None) if tok is not None else None
        if value is not None:
            return value
    return denoiser.mask_id


def _prompted(denoiser: Denoiser, cfg: SampleConfig, n: int):
    """Prompt i % P left-padded to the longest prompt, then gen_length mask ids; padding and prompt masks."""
    rows = _prompt_rows(denoiser, cfg)
    if any(len(r) == 0 for r in rows):
        raise ValueError("prompt holds an empty prompt: give at least one token")
    rows = [_rows("prompt", r, 1, denoiser)[0] for r in rows]  # checked once per prompt, not per sample
    longest = max(len(r) for r in rows)
    L = longest + (cfg.gen_length or DEFAULT_GEN_LENGTH)
    x = torch.full((n, L), denoiser.mask_id, dtype=torch.int64)
    attention = torch.ones(n, L, dtype=torch.bool)
    prompt_mask = torch.zeros(n, L, dtype=torch.bool)
    for i in range(n):
        row = rows[(cfg.first_index + i) % len(rows)]
        pad = longest - len(row)
        x[i, :pad] = _pad_id(denoiser)
        x[i, pad:longest] = row
        attention[i, :pad] = False
        prompt_mask[i, pad:longest] = True
    return x, (None if bool(attention.all()) else attention), prompt_mask, longest


def _check_length(denoiser: Denoiser, energy, L: int) -> None:
    if denoiser.max_positions is not None and L > denoiser.max_positions:
        raise ValueError(f"seq_len {L} exceeds the denoiser's {denoiser.max_positions} positions")
    if isinstance(energy, CausalLMEnergy) and energy.max_positions is not None:
        if L + (energy.bos_id is not None) > energy.max_positions:
            raise ValueError(f"seq_len {L} (+BOS) exceeds the energy model's {energy.max_positions} positions")


def _check_ids(denoiser: Denoiser, x: torch.Tensor, name: str) -> None:
    V = denoiser.vocab_size
    if V is not None and x.numel() and int(x.max()) >= V:
        raise ValueError(f"{name} holds token id {int(x.max())}, outside the denoiser's vocabulary [0, {V})")


def _blocks(start: int, L: int, block_length: Optional[int]):
    width = L - start
    if width < 1:
        raise ValueError(f"nothing to generate: the prompt or prefix fills all {L} positions")
    size = block_length or width
    if width % size:
        raise ValueError(f"block_length {size} must divide the {width} generated tokens")
    return [(lo, lo + size) for lo in range(start, L, size)]
