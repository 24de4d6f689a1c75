"""Speculative decoding with the diffusion model as drafter and the AR energy as verifier (PoE-Bridge family).

Left to right, each row (a sequence, or one of its K particles) repeats a round until its sequence is complete:
one denoiser call on the committed prefix and masks drafts ``y_j ~ q_j`` for the next ``verify_window`` positions
(independently, from the denoiser's marginals given the prefix); one AR call, teacher-forced on the prefix and the
drafts, gives the target ``pi_j = softmax((w l_D + (1 - w) l_AR) / T)`` at each; ``y_j`` is accepted with
probability ``min(1, pi_j(y_j) / q_j(y_j))``, left to right; at the first rejection a token is drawn from
``normalize(max(0, pi_j - q_j))`` (``pi_j`` itself where that mass is 0), and when all are accepted one more from
the next position's target.  This is exact for the chain of targets: with ``w = 0`` the AR model is sampled
exactly.  With K particles, importance weights ``prod p_AR(y) / pi(y)`` over the emitted tokens pick one chain per
sequence (``selection="snis"``, consistent for p_AR), or the released code's best-of-K rule does
(``"argmax"``: the highest mean ``l_AR - l_D``, a biased reranker kept for comparisons).

Rows progress at their own pace; a round's randomness sits at offsets fixed by the row's own round count, and
the denoiser and the AR model run on every row of the batch each round (finished rows ride along), so a
sequence's tokens do not depend on its batch.  This first version verifies in PyTorch on the window's rows
(float64 ``[K B, W, V]`` tensors) and recomputes the AR conditionals of the whole prefix each round; the fused
verification kernel and the AR model's KV cache come next (see BENCHMARKS.md).
"""

from __future__ import annotations

import torch

from . import ops
from .samplers import Sampler, register_sampler

__all__ = ["SpeculativeSampler"]


def _inverse_cdf(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The index where the float64 running sum of each row's weights passes u times its total."""
    cum = torch.cumsum(weights, -1)
    idx = torch.searchsorted(cum, (u * cum[:, -1])[:, None], right=True).squeeze(1)
    return idx.clamp(max=weights.shape[-1] - 1)


@register_sampler
class SpeculativeSampler(Sampler):
    """PoE-Bridge-style speculative decoding: denoiser drafts, AR verification, residual draws, K particles."""

    name = "speculative"
    supports_energy = True
    DRAFT, ACCEPT, FIX = 0, 1, 2

    def steps(self) -> int:
        return self.state.seq_len - self.state.layout.gen_start  # at most one round per token

    def check(self) -> None:
        super().check()
        state, cfg = self.state, self.cfg
        if not hasattr(state.energy, "log_probs"):
            raise ValueError("sampler='speculative' verifies drafts with an autoregressive energy: a HuggingFace causal "
                             "LM or an edlm_engine.AREnergy, got " + type(state.energy).__name__)
        if cfg.temperature <= 0:
            raise ValueError("sampler='speculative' needs temperature > 0 (its acceptance test divides by it)")
        if cfg.top_k is not None or cfg.top_p is not None or cfg.min_p is not None:
            raise ValueError("sampler='speculative' does not filter drafts yet (top_k, top_p, min_p come with its "
                             "verification kernel)")
        if len(state.layout.blocks) > 1:
            raise ValueError("sampler='speculative' decodes left to right by itself: leave block_length unset")

    def run(self, x, first, bar):
        state, K = self.state, self.cfg.particles
        B, L = x.shape
        rows = x.repeat_interleave(K, 0)  # row b * K + k: particle k of sequence b
        chain = _Chains(rows.shape[0], state.layout.gen_start, rows.device, first)
        self.step = 0
        while not bool(chain.done.all()):
            bar.update(1)
            state.count_step(first, (~chain.done).view(B, K).any(1))
            rows = self.round(rows, chain, first * K)
            self.step += 1
        self.record(chain, B, K)
        keep = self.select(chain, B, K, first)
        return rows.view(B, K, L)[torch.arange(B, device=x.device), keep]

    def round(self, rows, chain, row0):
        """One round for every row: draft, verify, commit."""
        state, cfg = self.state, self.cfg
        N, L = rows.shape
        W = cfg.verify_window
        pos = chain.c[:, None] + torch.arange(W + 1, device=rows.device)[None]  # the window and the next position
        valid = pos < L
        pos = pos.clamp(max=L - 1)
        ar = torch.arange(N, device=rows.device)[:, None]
        logits = state.at(self.denoise(rows, chain), pos).float()  # float32: the draft kernel reads these values
        d_log = torch.log_softmax(logits.double(), -1)
        d_log[..., state.mask_id] = float("-inf")
        drafts, log_q = self.draft(logits[:, :W], row0)
        verified = rows.clone()
        verified[ar[:, :W].expand(N, W)[valid[:, :W]], pos[:, :W][valid[:, :W]]] = drafts[valid[:, :W]]
        a_log = self.ar_log_probs(verified, pos, d_log.shape[-1])
        target = self.target(d_log, a_log)
        log_pi = target[:, :W].gather(-1, drafts[..., None]).squeeze(-1)
        u = ops.uniform((N, W), seed=cfg.seed, offset=self._offset(self.ACCEPT), row_offset=row0 * W,
                        device=rows.device)
        accepted = (torch.log(u) < log_pi - log_q) & valid[:, :W]
        n_acc = torch.cumprod(accepted.long(), 1).sum(1)
        fix = self.fix_token(target, d_log, n_acc, row0)
        return chain.commit(rows, drafts, fix, n_acc, pos, valid, (a_log, target, d_log), state)

    def target(self, d_log, a_log):
        """log pi = log_softmax((w l_D + (1 - w) l_AR) / T), the mask excluded (an end weight of 0 or 1 drops a
        term, so its -inf entries give no 0 * -inf)."""
        w = self.cfg.poe_weight
        mixed = a_log.clone() if w == 0 else d_log.clone() if w == 1 else w * d_log + (1.0 - w) * a_log
        mixed[..., self.state.mask_id] = float("-inf")
        return torch.log_softmax(mixed / self.cfg.temperature, -1)

    def denoise(self, rows, chain):
        """The denoiser on every row (each particle sees its sequence's prompt and padding); with a lookahead,
        the positions past it are hidden from models that take an attention mask."""
        state, K = self.state, self.cfg.particles
        t = (rows == state.mask_id).double().mean(1)
        hidden = None if self.cfg.lookahead is None else chain.c + self.cfg.lookahead
        return state.denoise(rows, t, chain.first, particles=K, hide_from=hidden)

    def draft(self, logits, row0):
        """y_j ~ q_j = softmax(l_D / T) (mask excluded) for each window position, with log q_j(y_j)."""
        N, W, V = logits.shape
        tokens, logp = ops.categorical(logits.reshape(N * W, V), 1, seed=self.cfg.seed,
                                       offset=self._offset(self.DRAFT), temperature=self.cfg.temperature,
                                       exclude=self.state.mask_id, row_offset=row0 * W)
        return tokens.view(N, W), logp.view(N, W)

    def ar_log_probs(self, rows, pos, V):
        """The energy's conditionals at the window's positions, widened with -inf to the denoiser's V ids."""
        lp = self.state.energy.log_probs(rows, pos).to(rows.device).double()
        if lp.shape[-1] < V:
            lp = torch.cat([lp, lp.new_full((*lp.shape[:2], V - lp.shape[-1]), float("-inf"))], -1)
        return lp[..., :V]

    def fix_token(self, target, d_log, n_acc, row0):
        """At the first rejection a draw from normalize(max(0, pi - q)) (pi where that is 0); after a fully accepted
        window, a draw from the next position's pi."""
        N, W = target.shape[0], self.cfg.verify_window
        ar = torch.arange(N, device=target.device)
        pi = target[ar, n_acc].exp()
        q = torch.softmax(d_log[ar, n_acc] / self.cfg.temperature, -1)  # the draft's distribution, as drawn
        residual = (pi - q).clamp(min=0.0)
        use_residual = (n_acc < W)[:, None] & (residual.sum(-1) > 0)[:, None]
        weights = torch.where(use_residual, residual, pi)
        u = ops.uniform((N,), seed=self.cfg.seed, offset=self._offset(self.FIX), row_offset=row0, device=pi.device)
        return _inverse_cdf(weights, u)

    def record(self, chain, B, K):
        """Per-sequence costs (a sequence's denoiser and AR calls are its slowest particle's rounds; its AR tokens
        all its particles') and the acceptance rate, accumulated over the batches."""
        totals = self.state.stats.setdefault("speculative", dict(sequences=0, calls=0, ar_tokens=0, accepted=0,
                                                                  drafted=0))
        totals["sequences"] += B
        totals["calls"] += int(chain.rounds.view(B, K).max(1).values.sum())
        totals["ar_tokens"] += int(chain.ar_tokens.sum())
        totals["accepted"] += int(chain.accepted)
        totals["drafted"] += int(chain.drafted)

    def select(self, chain, B, K, first):
        """One particle per sequence: importance resampling on log p_AR - log pi, or the released argmax rule."""
        if K == 1:
            return torch.zeros(B, dtype=torch.int64, device=chain.c.device)
        if self.cfg.selection == "argmax":
            return (chain.log_ratio / chain.emitted.clamp(min=1)).view(B, K).argmax(1)
        index, ess = ops.importance_resample(-chain.log_weight.view(B, K), seed=self.cfg.seed,
                                             offset=self.STRIDE * self.state.seq_len, row_offset=first)
        self.state.ess.append(ess)
        return index


class _Chains:
    """Per-row progress of the speculative rounds: committed length, weights and counters."""

    def __init__(self, N, start, device, first):
        self.first, self.start = first, start
        self.c = torch.full((N,), start, dtype=torch.int64, device=device)
        self.done = torch.zeros(N, dtype=torch.bool, device=device)
        self.log_weight = torch.zeros(N, dtype=torch.float64, device=device)
        self.log_ratio = torch.zeros(N, dtype=torch.float64, device=device)
        self.emitted = torch.zeros(N, dtype=torch.int64, device=device)
        self.rounds = torch.zeros(N, dtype=torch.int64, device=device)
        self.ar_tokens = torch.zeros(N, dtype=torch.int64, device=device)
        self.accepted = torch.zeros((), dtype=torch.int64, device=device)  # read back once, at the end
        self.drafted = torch.zeros((), dtype=torch.int64, device=device)

    def commit(self, rows, drafts, fix, n_acc, pos, valid, logs, state):
        """Write the accepted drafts and the fixing token of each unfinished row; update weights and counters."""
        N, W = drafts.shape
        live = ~self.done
        ar = torch.arange(N, device=rows.device)
        j = torch.arange(W + 1, device=rows.device)[None]
        tokens = torch.cat([drafts, drafts[:, :1]], 1)
        tokens[ar, n_acc] = fix
        emit = live[:, None] & valid & (j <= n_acc[:, None])
        out = rows.clone()
        out[ar[:, None].expand_as(pos)[emit], pos[emit]] = tokens[emit]
        log_ar, log_pi, log_d = (lp.gather(-1, tokens[..., None]).squeeze(-1) for lp in logs)
        self.log_weight += torch.where(emit, log_ar - log_pi, 0.0).sum(1)
        self.log_ratio += torch.where(emit, log_ar - log_d, 0.0).sum(1)
        self.emitted += emit.sum(1)
        self.rounds += live.long()
        self.ar_tokens += torch.where(live, self.c + W, 0)
        self.accepted += (emit[:, :W] & (j[:, :W] < n_acc[:, None])).sum()
        self.drafted += (live[:, None] & valid[:, :W]).sum()
        self.c = torch.where(live, self.c + emit.sum(1), self.c)
        self.done = self.c >= rows.shape[1]
        if state.eos_id is not None:
            out, ended = _end_at_eos(out, tokens, emit, state.eos_id, self.start)
            self.done |= ended
        return out


def _end_at_eos(rows, tokens, emit, eos_id, start):
    """Rows that emitted eos_id hold it at every later position and are finished."""
    ended = (emit & (tokens == eos_id)).any(1)
    is_eos = (rows == eos_id) & (torch.arange(rows.shape[1], device=rows.device)[None] >= start)
    first = torch.where(is_eos.any(1), is_eos.long().argmax(1), rows.shape[1])
    after = torch.arange(rows.shape[1], device=rows.device)[None] > first[:, None]
    return torch.where(after & ended[:, None], eos_id, rows), ended
