"""End-to-end EDLM sampling: edlm_engine.sample against the plain-PyTorch reference re-implementation.

Setting of the sampler issue: n = 4, L = 128, steps = 32, k = 4, window (0.8, 1.0); a BERT-shaped random
denoiser and a GPT-2-shaped random energy (vocab 50258, 2 layers, width 128), float32 on the CPU.

As a script it measures one provider's peak extra memory in a fresh process and prints one JSON line::

    python benchmarks/e2e.py --provider ours|reference
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from harness import peak_extra_mb, provider_parser  # noqa: E402
from reference_sampler import reference_sample  # noqa: E402

SETTING = dict(n=4, seq_len=128, steps=32, is_size=4, is_window=(0.8, 1.0))
VOCAB, MASK = 50258, 50257


def build_models(seed: int = 0):
    """Random BERT-shaped denoiser (mask id 50257) and GPT-2-shaped energy, in eval mode."""
    from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    bert = BertForMaskedLM(BertConfig(vocab_size=VOCAB, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=512, max_position_embeddings=512)).eval()
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=128, n_layer=2, n_head=2, n_positions=512,
                                      bos_token_id=50256, eos_token_id=50256)).eval()
    return bert, gpt2


def run_ours(bert, gpt2, sampler="ancestral", energy=True, seed=0):
    import edlm_engine

    kw = dict(SETTING)
    if sampler != "ancestral":
        kw = dict(n=kw["n"], seq_len=kw["seq_len"])
    return edlm_engine.sample(bert, gpt2 if energy else None, sampler=sampler, mask_id=MASK, seed=seed, **kw)


def run_reference(bert, gpt2, energy=True, seed=0):
    s = SETTING
    with torch.no_grad():
        return reference_sample(lambda x, sigma: bert(input_ids=x).logits, MASK, s["n"], s["seq_len"], s["steps"],
                                energy_model=gpt2 if energy else None, is_size=s["is_size"],
                                is_window=s["is_window"], bos_id=50256,
                                generator=torch.Generator().manual_seed(seed))


def main(argv=None):
    args = provider_parser(__doc__.splitlines()[0], ["ours", "reference"], device=False).parse_args(argv)
    bert, gpt2 = build_models()
    fn = (lambda: run_ours(bert, gpt2)) if args.provider == "ours" else (lambda: run_reference(bert, gpt2))
    fn()  # warm-up: kernels, allocator, lazy inits
    t0 = time.perf_counter()
    peak, method = peak_extra_mb(fn)
    print(json.dumps({"provider": args.provider, "peak_mb": peak, "method": method,
                      "seconds": time.perf_counter() - t0}))


if __name__ == "__main__":
    main()
