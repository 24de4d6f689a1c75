"""DiffusionGemma's generate with the engine doing each denoising step's sampling (integrations.diffusion_gemma)."""

import numpy as np
import pytest
import torch

from edlm_engine import ops
from edlm_engine.integrations import diffusion_gemma

from .stats import P_4SE, chi_square_pvalue

transformers = pytest.importorskip("transformers")
DiffusionGemmaConfig = getattr(transformers, "DiffusionGemmaConfig", None)
pytestmark = pytest.mark.skipif(DiffusionGemmaConfig is None, reason="transformers without DiffusionGemma")

VOCAB = 128


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    text = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                head_dim=16, intermediate_size=64, num_experts=2, top_k_experts=1, moe_intermediate_size=32)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    torch.manual_seed(0)
    model = transformers.DiffusionGemmaForBlockDiffusion(
        DiffusionGemmaConfig(text_config=text, vision_config=vision, canvas_length=8))
    out = tmp_path_factory.mktemp("diffusion-gemma") / "tiny"
    model.save_pretrained(out)
    return str(out)


def _load(path):
    return transformers.DiffusionGemmaForBlockDiffusion.from_pretrained(path).eval()


def test_generate_with_the_engine_is_reproducible_per_sample(path):
    model = _load(path)
    ids = torch.randint(0, VOCAB, (3, 5), generator=torch.Generator().manual_seed(1))
    kw = dict(max_new_tokens=16, max_denoising_steps=6)
    native = model.generate(input_ids=ids, **kw)
    diffusion_gemma.apply(model, seed=3)
    ours = model.generate(input_ids=ids, **kw)
    assert ours.sequences.shape == native.sequences.shape and ours.sequences.dtype == native.sequences.dtype
    assert torch.equal(ours.sequences[:, :5], ids) and ((ours.sequences >= 0) & (ours.sequences < VOCAB)).all()
    diffusion_gemma.apply(model, seed=3)  # counting samples from 0 again, then in two calls
    split = torch.cat([model.generate(input_ids=ids[:2], **kw).sequences, model.generate(input_ids=ids[2:], **kw).sequences])
    assert torch.equal(ours.sequences, split)
    diffusion_gemma.apply(model, seed=4)
    assert not torch.equal(model.generate(input_ids=ids, **kw).sequences, ours.sequences)
    diffusion_gemma.remove(model)
    assert "_denoising_step" not in model.__dict__ and model.generate(input_ids=ids, **kw).sequences.shape == (3, 21)
    assert _load(path).generate(input_ids=ids, **kw).sequences.shape == (3, 21)  # a fresh model is native


def test_acceptance_equals_the_native_rule_on_the_same_logits_and_draws():
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import (EntropyBoundSampler,
                                                                                EntropyBoundSamplerConfig)

    g = torch.Generator().manual_seed(5)
    logits = torch.randn(4, 32, 1000, generator=g) * torch.linspace(0.5, 6.0, 32)[None, :, None]
    current = torch.randint(0, 1000, (4, 32), generator=g)
    drawn, scores, argmax = ops.sample_scored(logits, torch.zeros_like(current), -1, seed=0)
    assert torch.equal(argmax, logits.argmax(-1))
    for bound in (0.1, 1.0, 5.0):
        native = EntropyBoundSampler(EntropyBoundSamplerConfig(entropy_bound=bound), 32, 1000, 10)
        engine = diffusion_gemma._sampler_class()(EntropyBoundSamplerConfig(entropy_bound=bound), 32, 1000, 10)
        engine.bind(diffusion_gemma._Engine(0, 0)).engine.entropy = scores[3].float()
        assert torch.equal(native.accept_canvas(current, drawn, logits, 1), engine.accept_canvas(current, drawn, logits, 1))
        assert torch.equal(native.accepted_token_mask, engine.accepted_token_mask)


def test_the_step_draws_every_token_with_its_probability():
    V = 30_000
    ranks = torch.arange(1, V + 1, dtype=torch.float64)
    logits = (-1.1 * ranks.log()).float()  # a long Zipf tail
    temperature = 0.8
    x = torch.zeros(1, 200_000, dtype=torch.int64)
    tokens, _, _ = ops.sample_scored(logits.expand(1, 200_000, V), x, -1, seed=1, temperature=temperature)
    probs = torch.softmax(logits.double() / temperature, -1).numpy()
    counts = np.bincount(tokens.ravel().numpy(), minlength=V)
    assert chi_square_pvalue(counts, probs)[0] > P_4SE
    assert counts[1000:].sum() > 0.2 * 200_000 * probs[1000:].sum()  # the tail is reached
