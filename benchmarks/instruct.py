"""Instruct decoding on LLaDA's vocabulary: edlm_engine.sample against the copy of LLaDA's generate.

Setting of the instruct-decoding issue: V = 126464 (LLaDA's vocabulary, mask id 126336), B = 2, a 16-token
prompt, gen_length 128, block_length 32, 16 steps, temperature 1, low-confidence unmasking.  The denoiser is a
small random bidirectional model (embedding, one tanh layer, a V-wide head; float32), the same for both, so the
difference is the sampling around it.

As a script it times one provider and measures its peak extra memory in a fresh process, printing one JSON
line (the CPU has no allocator statistics, so the high-water mark of a fresh process is what is honest)::

    python benchmarks/instruct.py --provider ours|llada [--device cuda]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from harness import measure_provider, provider_parser  # noqa: E402
from llada_reference import llada_generate  # noqa: E402

V, MASK = 126464, 126336
SETTING = dict(B=2, prompt_len=16, gen_length=128, block_length=32, steps=16, temperature=1.0)


class TinyDenoiser(torch.nn.Module):
    """Embedding, one tanh layer and a V-wide head: a bidirectional model whose logits cost what LLaDA's head does."""

    def __init__(self, hidden: int = 32, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.embed = torch.nn.Parameter(torch.randn(V, hidden, generator=g) * 0.5)
        self.head = torch.nn.Parameter(torch.randn(V, hidden, generator=g) / hidden**0.5)

    def forward(self, x):
        h = torch.tanh(self.embed[x])
        return SimpleNamespace(logits=h @ self.head.T)


def prompt(device="cpu"):
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, MASK, (SETTING["B"], SETTING["prompt_len"]), generator=g).to(device)


def run_ours(model, device="cpu"):
    import edlm_engine

    s = SETTING
    return edlm_engine.sample(lambda x, t: model(x).logits, n=s["B"], prompt=prompt(device).tolist(),
                              gen_length=s["gen_length"], block_length=s["block_length"], steps=s["steps"],
                              temperature=s["temperature"], unmasking="confidence", mask_id=MASK, seed=0,
                              device=device).tokens


def run_llada(model, device="cpu"):
    s = SETTING
    return llada_generate(model, prompt(device), steps=s["steps"], gen_length=s["gen_length"],
                          block_length=s["block_length"], temperature=s["temperature"], remasking="low_confidence",
                          mask_id=MASK, generator=torch.Generator(device=device).manual_seed(0))


PROVIDERS = {"ours": run_ours, "llada": run_llada}


def main(argv=None):
    args = provider_parser(__doc__.splitlines()[0], PROVIDERS).parse_args(argv)
    model = TinyDenoiser().to(args.device)
    fn = PROVIDERS[args.provider]
    with torch.no_grad():
        assert not (fn(model, args.device) == MASK).any()
        figures = measure_provider(lambda: fn(model, args.device), args.device)
    print(json.dumps({"provider": args.provider, "device": args.device, **figures}))


if __name__ == "__main__":
    main()
