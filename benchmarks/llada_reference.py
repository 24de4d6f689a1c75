"""Plain-PyTorch re-implementation of LLaDA's public ``generate`` (ML-GSAI/LLaDA, generate.py): the baseline of
the instruct-decoding benchmarks.  It is not part of the product and never imports ``edlm_engine``.

What it reproduces, step for step:
* ``x = [prompt, mask * gen_length]``; the generated part is cut into ``gen_length / block_length`` blocks, each
  decoded with ``steps / blocks`` steps; before a block, each row's masked count in it is split as evenly as
  possible over those steps (the larger shares first);
* at a step, one model call on the whole ``[B, L]`` sequence (two with classifier-free guidance, the second with
  the prompt masked, combined as ``u + (s + 1)(c - u)``);
* the draw: float64 Gumbel noise on the whole ``[B, L, V]`` logits, ``exp(logits) / (-log u) ** temperature`` and
  an argmax (at temperature 0 the argmax of the logits);
* the confidence of "low_confidence" remasking: ``softmax(logits.to(float64))`` over the whole ``[B, L, V]``
  tensor (untempered), gathered at the draw; "random" remasking uses a uniform number instead;
* positions after the current block and positions not masked get confidence ``-inf``; a Python loop over the
  rows takes each row's ``topk`` and commits those draws.

Kept as they are (this is what users run): the full-tensor float64 copies, the untempered confidence, and the
per-row loop.  Departure: ``generate`` takes prompts of one length and batch 1 in its example; this copy takes a
``[B, P]`` batch of equal-length prompts (what its loops already support) and an optional torch generator.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

__all__ = ["llada_generate"]


def _gumbel_draw(logits: torch.Tensor, temperature: float, generator: Optional[torch.Generator]) -> torch.Tensor:
    if temperature == 0:
        return logits.argmax(-1)
    z = logits.to(torch.float64)
    u = torch.rand(z.shape, dtype=torch.float64, device=z.device, generator=generator)
    return (z.exp() / (-torch.log(u)) ** temperature).argmax(-1)


def _transfer_counts(block_masked: torch.Tensor, steps: int) -> torch.Tensor:
    total = block_masked.sum(1, keepdim=True)
    counts = torch.zeros(total.shape[0], steps, dtype=torch.int64, device=total.device) + total // steps
    for row in range(total.shape[0]):
        counts[row, : int(total[row] % steps)] += 1
    return counts


@torch.no_grad()
def llada_generate(model: Callable, prompt: torch.Tensor, steps: int = 128, gen_length: int = 128,
                   block_length: int = 128, temperature: float = 0.0, cfg_scale: float = 0.0,
                   remasking: str = "low_confidence", mask_id: int = 126336,
                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """LLaDA's ``generate`` for a ``[B, P]`` prompt batch; ``model(x)`` returns an object with ``.logits``."""
    B, P = prompt.shape
    x = torch.full((B, P + gen_length), mask_id, dtype=torch.long, device=prompt.device)
    x[:, :P] = prompt
    prompt_index = x != mask_id
    if gen_length % block_length or steps % (gen_length // block_length):
        raise ValueError("gen_length must be a multiple of block_length, and steps of the number of blocks")
    n_blocks = gen_length // block_length
    steps_per_block = steps // n_blocks
    for block in range(n_blocks):
        lo, hi = P + block * block_length, P + (block + 1) * block_length
        counts = _transfer_counts(x[:, lo:hi] == mask_id, steps_per_block)
        for i in range(steps_per_block):
            mask_index = x == mask_id
            if cfg_scale > 0:
                unconditional = torch.where(prompt_index, mask_id, x)
                both = model(torch.cat([x, unconditional])).logits
                cond, uncond = both.chunk(2)
                logits = uncond + (cfg_scale + 1) * (cond - uncond)
            else:
                logits = model(x).logits
            x0 = _gumbel_draw(logits, temperature, generator)
            if remasking == "low_confidence":
                p = torch.softmax(logits.to(torch.float64), dim=-1)
                x0_p = p.gather(-1, x0[..., None]).squeeze(-1)
            elif remasking == "random":
                x0_p = torch.rand(x0.shape, device=x0.device, generator=generator)
            else:
                raise ValueError(f"remasking must be 'low_confidence' or 'random', got {remasking!r}")
            x0_p[:, hi:] = float("-inf")
            x0 = torch.where(mask_index, x0, x)
            confidence = torch.where(mask_index, x0_p, torch.tensor(float("-inf"), dtype=x0_p.dtype))
            transfer = torch.zeros_like(x0, dtype=torch.bool)
            for row in range(B):
                _, chosen = torch.topk(confidence[row], k=int(counts[row, i]))
                transfer[row, chosen] = True
            x[transfer] = x0[transfer]
    return x
