"""Speculative decoding with the diffusion model as drafter and the AR energy as verifier (PoE-Bridge family).

Left to right, each sequence repeats a round until it is complete.  One denoiser call on the committed prefix and
masks gives ``q_j`` for the next ``verify_window`` positions; each of the K particles drafts ``y_j ~ q_j`` there
(independently, from the denoiser's marginals given the prefix).  One AR call, teacher-forced on each particle's
drafts, gives the target ``pi_j = softmax((w l_D + (1 - w) l_AR) / T)`` at each; ``y_j`` is accepted with
probability ``min(1, pi_j(y_j) / q_j(y_j))``, left to right; at the first rejection a token is drawn from
``normalize(max(0, pi_j - q_j))`` (``pi_j`` itself where that mass is 0), and when all are accepted one more from
the next position's target.  Each particle's segment is thus exactly a draw of the chain of targets; with
``w = 0`` the AR model is sampled exactly.  ``top_k`` / ``top_p`` / ``min_p`` filter the drafts (the proposal), never
the target: they change how many drafts pass, not what is sampled.

With K particles, one segment per sequence is kept every round and forked to all particles (and the AR model's
cache with it): ``selection="snis"`` resamples by the importance weights ``prod p_AR(y) / pi(y)`` over the
segment's tokens, which corrects the segment towards p_AR (consistent in K: the segment boundaries depend only
on the past, so the kept segments chain into a draw of p_AR); ``"argmax"`` is the released code's rule (the
highest mean ``log p_AR - log q`` over the segment; the released code reads raw logits, which differ by
per-position constants: a biased reranker kept for comparisons).  Correcting a few tokens at a time keeps
the weights far from degenerate, where one weight over the whole sequence is (as EDLM's are).

Sequences progress at their own pace; a round's randomness sits at offsets fixed by its index, and the models
run on every row of the batch each round (finished rows ride along), so a sequence's tokens do not depend on its
batch.  The accept tests and the fixing draw are one kernel (:func:`edlm_engine.ops.speculative_verify`), which
normalizes each window row in float64 as it reads it: no ``[K, W, V]`` float64 tensor is made.
"""

from __future__ import annotations

import torch

from . import ops
from .samplers import Sampler, register_sampler

__all__ = ["SpeculativeSampler"]

_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@register_sampler
class SpeculativeSampler(Sampler):
    """PoE-Bridge-style speculative decoding: denoiser drafts, AR verification, residual draws, K particles."""

    name = "speculative"
    supports_energy = True
    DRAFT, VERIFY, SELECT = 0, 1, 2

    def steps(self) -> int:
        return self.state.seq_len - self.state.layout.gen_start  # at most one round per token

    def check(self) -> None:
        super().check()
        state, cfg = self.state, self.cfg
        if not hasattr(state.energy, "conditionals"):
            raise ValueError("sampler='speculative' verifies drafts with an autoregressive energy: a HuggingFace causal "
                             "LM or an edlm_engine.AREnergy, got " + type(state.energy).__name__)
        if cfg.temperature <= 0:
            raise ValueError("sampler='speculative' needs temperature > 0 (its acceptance test divides by it)")
        if len(state.layout.blocks) > 1:
            raise ValueError("sampler='speculative' decodes left to right by itself: leave block_length unset")

    def run(self, x, first, bar):
        state, K = self.state, self.cfg.particles
        progress = _Progress(x.shape[0], state.layout.gen_start, x.device)
        attention = state._rows("attention_mask", first, x.shape[0])
        ar = state.energy.conditionals(x, state.layout.gen_start, K, attention)
        self.step = 0
        while not bool(progress.done.all()):
            bar.update(1)
            state.count_step(first, ~progress.done)
            x = self.round(x, progress, ar, first)
            self.step += 1
        progress.record(state.stats, ar.fed.view(-1, K).sum(1))
        return x

    def round(self, x, progress, ar, first):
        """One round for every sequence: draft K windows, verify them, keep one segment, commit it."""
        state, cfg, K = self.state, self.cfg, self.cfg.particles
        B, L = x.shape
        W = cfg.verify_window
        pos = progress.c[:, None] + torch.arange(W + 1, device=x.device)[None]  # the window and the next position
        valid = pos < L
        pos = pos.clamp(max=L - 1)
        logits = state.at(self.denoise(x, progress, first), pos)
        if logits.dtype not in _KERNEL_DTYPES:
            logits = logits.float()
        drafts = self.draft(logits[:, :W], first).reshape(B * K, W)  # drawn from the values the verification reads
        rows = _scatter_rows(x, drafts, pos[:, :W], valid[:, :W], K)
        live = (~progress.done).repeat_interleave(K)
        ar_logits = ar.window(rows, progress.c.repeat_interleave(K), W + 1, live).to(x.device)
        if ar_logits.dtype != logits.dtype:  # the kernel reads one dtype; the same models' windows need no copy
            logits, ar_logits = logits.float(), ar_logits.float()
        n_valid = torch.where(live, valid.sum(1).repeat_interleave(K), 0)
        n_acc, fix, *logs = ops.speculative_verify(logits, ar_logits, drafts, n_valid, poe_weight=cfg.poe_weight,
                                                   mask_id=state.mask_id, offset=self._offset(self.VERIFY),
                                                   row_offset=first * K, **self._rng())
        tokens = torch.cat([drafts, drafts[:, :1]], 1).scatter(1, n_acc[:, None], fix[:, None]).view(B, K, W + 1)
        j = torch.arange(W + 1, device=x.device)
        emit = ((j < n_valid[:, None]) & (j <= n_acc[:, None])).view(B, K, W + 1)
        keep = self.select(emit, [lp.view(B, K, W + 1) for lp in logs], first, progress)
        ar.select((torch.arange(B, device=x.device) * K + keep).repeat_interleave(K))
        chosen, emitted = tokens[torch.arange(B), keep], emit[torch.arange(B), keep]
        ar.advance(emitted.sum(1).repeat_interleave(K))
        progress.count(n_acc.view(B, K), valid, K)
        return progress.commit(x, chosen, emitted, pos, state.eos_id)

    def denoise(self, x, progress, first):
        """The denoiser on every sequence; with a lookahead, the positions past it are hidden from models that
        take an attention mask."""
        state = self.state
        t = (x == state.mask_id).double().mean(1)
        hidden = None if self.cfg.lookahead is None else progress.c + self.cfg.lookahead
        return state.denoise(x, t, first, hide_from=hidden)

    def draft(self, logits, first):
        """K draws y_j ~ q_j = softmax(l_D / T) (mask excluded, filtered by top_k / top_p / min_p) per window
        position: [B, K, W]."""
        B, W, V = logits.shape
        K = self.cfg.particles
        tokens, _ = ops.categorical(logits.reshape(B * W, V), K, offset=self._offset(self.DRAFT),
                                    exclude=self.state.mask_id, row_offset=first * W, **self._rng())
        return tokens.view(B, W, K).transpose(1, 2)

    def select(self, emit, logs, first, progress):
        """The particle each sequence keeps this round: importance resampling on log p_AR - log pi over its
        segment, or the released argmax of the mean log p_AR - log q.  [B]."""
        B, K = emit.shape[:2]
        if K == 1:
            return torch.zeros(B, dtype=torch.int64, device=emit.device)
        log_q, log_pa, log_pi = logs
        if self.cfg.selection == "argmax":
            return (torch.where(emit, log_pa - log_q, 0.0).sum(-1) / emit.sum(-1).clamp(min=1)).argmax(1)
        log_w = torch.where(emit, log_pa - log_pi, 0.0).sum(-1)
        index, ess = ops.importance_resample(-log_w, seed=self.cfg.seed, offset=self._offset(self.SELECT),
                                             row_offset=first)
        self.state.ess.append(ess.masked_fill(progress.done, float("nan")))  # no mask indexing: no host sync
        return index


class _Progress:
    """Per-sequence progress of the rounds: committed length, finished rows and counters."""

    def __init__(self, B, start, device):
        self.start = start
        self.c = torch.full((B,), start, dtype=torch.int64, device=device)
        self.done = torch.zeros(B, dtype=torch.bool, device=device)
        self.rounds = torch.zeros(B, dtype=torch.int64, device=device)
        self.accepted = torch.zeros((), dtype=torch.int64, device=device)  # read back once, at the end
        self.drafted = torch.zeros((), dtype=torch.int64, device=device)

    def count(self, n_acc, valid, K):
        """Rounds per sequence; accepted and drafted tokens over all particles."""
        live = ~self.done
        self.rounds += live.long()
        self.accepted += torch.where(live[:, None], n_acc, 0).sum()  # runs stop at the end of a row
        self.drafted += (live[:, None] & valid[:, :-1]).sum() * K

    def commit(self, x, tokens, emit, pos, eos_id):
        """Write each sequence's kept segment; finished sequences (full, or past an EOS) stop."""
        out = _scatter_rows(x, tokens, pos, emit, 1)
        self.c = self.c + emit.sum(1)
        self.done = self.c >= x.shape[1]
        if eos_id is not None:
            out, ended = _end_at_eos(out, tokens, emit, eos_id, self.start)
            self.done |= ended
        return out

    def record(self, stats, ar_tokens):
        """Per-sequence costs (one denoiser and one AR call per round serve all K particles; AR tokens count all
        particles') and the acceptance rate, accumulated over the batches."""
        totals = stats.setdefault("speculative", dict(sequences=0, calls=0, ar_tokens=0, accepted=0, drafted=0))
        totals["sequences"] += self.c.shape[0]
        totals["calls"] += int(self.rounds.sum())
        totals["ar_tokens"] += int(ar_tokens.sum())
        totals["accepted"] += int(self.accepted)
        totals["drafted"] += int(self.drafted)


def _scatter_rows(x, tokens, pos, keep, K):
    """Each sequence's row repeated K times, with ``tokens`` [B K, P] written at columns ``pos`` [B, P] where
    ``keep`` [B, P] holds; the other slots write to a spare column, dropped after (a scatter with no colliding
    index and no host sync, where mask indexing would have both)."""
    L = x.shape[1]
    rows = torch.cat([x, x[:, :1]], 1).repeat_interleave(K, 0)
    rows.scatter_(1, torch.where(keep, pos, L).repeat_interleave(K, 0), tokens)
    return rows[:, :L]


def _end_at_eos(rows, tokens, emit, eos_id, start):
    """Rows that emitted eos_id hold it at every later position and are finished."""
    ended = (emit & (tokens == eos_id)).any(1)
    is_eos = (rows == eos_id) & (torch.arange(rows.shape[1], device=rows.device)[None] >= start)
    first = torch.where(is_eos.any(1), is_eos.long().argmax(1), rows.shape[1])
    after = torch.arange(rows.shape[1], device=rows.device)[None] > first[:, None]
    return torch.where(after & ended[:, None], eos_id, rows), ended
