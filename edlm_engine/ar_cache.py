"""An autoregressive model's conditionals over a window that moves left to right, row by row.

A speculative sampler asks, each round, for ``log p_AR(. | x_<j)`` at the ``width`` positions ``j`` from each row's
committed length ``c`` on (the drafts sit in ``x`` there), then commits a few tokens per row.  Two ways to answer:

* :class:`RecomputedConditionals`: the model reads every row whole each round (what a plain callable
  ``fn(x [N, L]) -> [N, L, V]`` allows).
* :class:`CachedConditionals`: a HuggingFace causal LM with its key/value cache: the committed prefix is encoded
  once (once per sequence, then forked to its particles); each round feeds ``width`` tokens (the last committed
  one and the drafts) and the cache is cropped, row by row, to the tokens that row committed.

Rows commit different numbers of tokens, so the cache of row n holds its ``P_n`` committed slots at the front
and padding up to the longest row; an attention mask hides the padding (and a prompt's left padding), and
explicit position ids count only the visible tokens, so a row's conditionals do not depend on its batch.
"""

from __future__ import annotations

import inspect
from typing import Optional

import torch

__all__ = ["RecomputedConditionals", "CachedConditionals"]


class RecomputedConditionals:
    """Conditionals by a call on the whole rows each round (``energy.window_logits(x, positions)``)."""

    def __init__(self, energy, rows: int, device, attention: Optional[torch.Tensor] = None):
        self.energy, self.attention = energy, attention  # attention: a prompt's padding, per particle row
        self.fed = torch.zeros(rows, dtype=torch.int64, device=device)  # tokens the model read, per row

    def window(self, x: torch.Tensor, c: torch.Tensor, width: int, live: torch.Tensor) -> torch.Tensor:
        """Logits (any normalization) ``[N, width, V]`` of ``x_j`` given ``x_<j`` for ``j = c .. c + width - 1``;
        positions past the end repeat the last one."""
        L = x.shape[1]
        pos = (c[:, None] + torch.arange(width, device=x.device)[None]).clamp(max=L - 1)
        self.fed += torch.where(live, (c + width).clamp(max=L), 0)
        return self.energy.window_logits(x, pos, attention=self.attention)

    def select(self, rows: torch.Tensor) -> None:
        """Nothing to fork: the next call reads the rows it is given (the particles of a sequence share its
        padding)."""

    def advance(self, count: torch.Tensor) -> None:
        """Nothing to keep: the next call reads the rows again."""


class CachedConditionals:
    """A HuggingFace causal LM's conditionals with its key/value cache, row-ragged (see the module docstring).

    Parameters
    ----------
    energy : CausalLMEnergy
        Gives the base model, the output head and BOS.
    x : int64 Tensor [B, L]
        The sequences at the start: columns before ``start`` are committed (prompt or prefix).
    start : int
        The first column to generate (>= 1 when a row starts with BOS, which is then its context).
    particles : int
        Copies of each sequence (consecutive rows), which share the encoding of the prefix.
    attention : bool Tensor [B, L], optional
        False at a prompt's left padding, which the model never attends to.
    """

    def __init__(self, energy, x: torch.Tensor, start: int, particles: int = 1,
                 attention: Optional[torch.Tensor] = None):
        self.base, self.head, self.bos = energy.base, energy.head, energy.bos_id
        self.max_pos = energy.max_positions
        device = self.head.weight.device
        x = x.to(device)
        B = x.shape[0]
        # A row that starts with BOS is its own context; any other gets BOS in front (offset 1), as log_probs does.
        offset = (x[:, 0] != self.bos).long()
        seen = torch.ones_like(x, dtype=torch.bool) if attention is None else attention.to(device)
        ids = torch.cat([torch.full_like(x[:, :1], self.bos), x], 1)
        keep = torch.cat([torch.ones_like(seen[:, :1]), seen], 1)
        ids = torch.where(offset[:, None].bool(), ids, torch.cat([x, x[:, :1]], 1))[:, :start]
        keep = torch.where(offset[:, None].bool(), keep, torch.cat([seen, seen[:, :1]], 1))[:, :start]
        ids = torch.where(keep, ids, self.bos)  # padding is hidden; its id (the mask id, say) may be none of the AR's
        # The cache holds every committed token but the last, which each round feeds first.
        self.length = (start + offset - 1).repeat_interleave(particles)
        self.keep = keep & (torch.arange(start, device=device)[None] < (start + offset - 1)[:, None])
        self.next_pos = self.keep.long().sum(1).repeat_interleave(particles)
        self.cache = _new_cache(energy.model)
        # transformers 5.2x names it ``cache``; earlier versions ``past_key_values``
        self.cache_arg = "cache" if "cache" in inspect.signature(type(self.base).forward).parameters else "past_key_values"
        if start > 0:  # a BOS row's last column is encoded too (its slot is then hidden), so no query sees nothing
            pos = (keep.long().cumsum(1) - 1).clamp(min=0)
            with torch.no_grad():
                self.base(input_ids=ids, attention_mask=keep.long(), position_ids=pos, use_cache=True,
                          **{self.cache_arg: self.cache})
            self.cache.batch_repeat_interleave(particles)
        self.keep = self.keep.repeat_interleave(particles, 0)
        self.fed = torch.zeros(B * particles, dtype=torch.int64, device=device)
        self.fed[::particles] = start  # the prefix is encoded once per sequence

    @staticmethod
    def supports(model) -> bool:
        """Whether the model's cache is one plain key/value tensor pair per layer (no sliding window, no
        recurrent state), which can be cropped row by row."""
        try:
            return all(type(layer).__name__ == "DynamicLayer" for layer in _new_cache(model).layers)
        except (TypeError, ValueError, AttributeError):
            return False

    @torch.no_grad()
    def window(self, x: torch.Tensor, c: torch.Tensor, width: int, live: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, width, V]`` of ``x_j`` given ``x_<j`` for ``j = c .. c + width - 1`` (the model's dtype):
        one forward pass on the last committed token and the ``width - 1`` drafts after it."""
        device = self.head.weight.device
        x, c = x.to(device), c.to(device)
        N, L = x.shape
        col = c[:, None] - 1 + torch.arange(width, device=device)[None]
        tokens = torch.where(col < 0, self.bos, x.gather(1, col.clamp(0, L - 1)))
        pos = self.next_pos[:, None] + torch.arange(width, device=device)[None]
        if self.max_pos is not None:
            pos = pos.clamp(max=self.max_pos - 1)  # only past the end of a row, whose outputs are never used
        mask = torch.cat([self.keep, torch.ones(N, width, dtype=torch.bool, device=device)], 1)
        out = self.base(input_ids=tokens, attention_mask=mask.long(), position_ids=pos, use_cache=True,
                        **{self.cache_arg: self.cache})
        self.width = width
        self.fed += torch.where(live.to(device), width, 0)
        hidden = out.last_hidden_state
        return self.head(hidden.to(self.head.weight.dtype))

    def select(self, rows: torch.Tensor) -> None:
        """Row r becomes a copy of row ``rows[r]`` (the particle a sequence keeps, forked to all its particles)."""
        rows = rows.to(self.length.device)
        for layer in self.cache.layers:
            if layer.is_initialized:
                layer.keys, layer.values = layer.keys[rows], layer.values[rows]
        self.keep, self.length, self.next_pos = self.keep[rows], self.length[rows], self.next_pos[rows]

    def advance(self, count: torch.Tensor) -> None:
        """Keep, per row, its ``count`` first tokens of the last window (the committed ones) after its cached
        prefix; drop the rest, and the padding beyond the longest row."""
        count = count.to(self.length.device)
        T = self.keep.shape[1]
        length = self.length + count
        slot = torch.arange(int(length.max()), device=count.device)[None]  # a shape: the round's one cache read-back
        old = slot < self.length[:, None]
        index = torch.where(old, slot, T + slot - self.length[:, None]).clamp(max=T + self.width - 1)
        padded = torch.cat([self.keep, self.keep.new_zeros(self.keep.shape[0], self.width)], 1)
        self.keep = torch.where(old, padded.gather(1, index), slot < length[:, None])
        for layer in self.cache.layers:
            at = index[:, None, :, None].expand(-1, layer.keys.shape[1], -1, layer.keys.shape[3])
            layer.keys, layer.values = layer.keys.gather(2, at), layer.values.gather(2, at)
        self.length = length
        self.next_pos = self.next_pos + count


def _new_cache(model):
    from transformers import DynamicCache

    return DynamicCache(config=model.config)
