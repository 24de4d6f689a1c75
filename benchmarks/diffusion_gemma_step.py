"""One DiffusionGemma denoising step's sampling at V = 262144: transformers' native code against the engine.

B = 4, canvas 32, float32 logits at the step's temperature.  Native (transformers 5.24,
``DiffusionGemmaGenerationMixin._denoising_step`` and ``EntropyBoundSampler``): a float32 softmax copy,
``torch.multinomial``, an argmax, ``Categorical(logits).entropy()`` and a sort for the entropy-bound acceptance,
then the renoising.  Engine (``integrations.diffusion_gemma``): ``ops.sample_scored`` (draw, entropy and argmax from
one pass, ``mask_id=-1``), the same acceptance rule on those entropies, the renoising from the Philox
stream.  As a script it measures one provider in a fresh process and prints a JSON line::

    python benchmarks/diffusion_gemma_step.py --provider native|engine
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from harness import measure_provider, provider_parser  # noqa: E402

B, CANVAS, V, BOUND = 4, 32, 262_144, 0.1


def logits(device="cpu"):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(B, CANVAS, V, generator=g) * 3.0).to(device)


def native_step(processed, current):
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import (EntropyBoundSampler,
                                                                                EntropyBoundSamplerConfig)

    probs = torch.softmax(processed, dim=-1, dtype=torch.float32)
    drawn = torch.multinomial(probs.view(-1, V), num_samples=1).view(B, CANVAS)
    argmax = processed.argmax(-1)
    sampler = EntropyBoundSampler(EntropyBoundSamplerConfig(entropy_bound=BOUND), CANVAS, V, 48)
    accepted = sampler.accept_canvas(current, drawn, processed, 1)
    return sampler.renoise_canvas(accepted, 1), argmax


def engine_step(processed, current):
    from edlm_engine.integrations import diffusion_gemma
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import EntropyBoundSamplerConfig

    from edlm_engine import ops

    engine = diffusion_gemma._Engine(seed=0, first_index=0)
    sampler = diffusion_gemma._sampler_class()(EntropyBoundSamplerConfig(entropy_bound=BOUND), CANVAS, V, 48)
    sampler.bind(engine)
    drawn, scores, argmax = ops.sample_scored(processed, torch.zeros_like(current), -1, seed=0)
    engine.entropy = scores[3].float()
    accepted = sampler.accept_canvas(current, drawn, processed, 1)
    return sampler.renoise_canvas(accepted, 1), argmax


PROVIDERS = {"native": native_step, "engine": engine_step}


def main(argv=None):
    args = provider_parser(__doc__.splitlines()[0], PROVIDERS).parse_args(argv)
    fn = PROVIDERS[args.provider]
    x, current = logits(args.device), torch.zeros(B, CANVAS, dtype=torch.int64, device=args.device)
    figures = measure_provider(lambda: fn(x, current), args.device, repeats=5)
    print(json.dumps({"provider": args.provider, **figures, "logits_mb": x.numel() * 4 / 2**20}))


if __name__ == "__main__":
    main()
