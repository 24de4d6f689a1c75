"""One DiffusionGemma denoising step's sampling at V = 262144, native against the engine (diffusion_gemma_step.py),
and the distribution check of both samplers on a long-tailed row at the step's temperature."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from harness import fresh_process

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))  # the test suite's chi-square (tests/stats.py)
pytest.importorskip("transformers.models.diffusion_gemma")


def _run(provider):
    return fresh_process(HERE / "diffusion_gemma_step.py", "--provider", provider)


@pytest.mark.ratio
def test_ratio_step_sampling_at_least_3x_faster_at_a_quarter_of_the_memory(figures):
    native, engine = _run("native"), _run("engine")
    speed = native["seconds"] / engine["seconds"]
    figures(f"DiffusionGemma step sampling B=4 canvas=32 V=262144 [cpu]: native {native['seconds'] * 1e3:.0f} ms / "
            f"{native['peak_mb']:.0f} MiB extra, engine {engine['seconds'] * 1e3:.0f} ms / {engine['peak_mb']:.0f} MiB "
            f"extra: {speed:.1f}x faster")
    assert speed >= 3.0
    assert engine["peak_mb"] <= 0.25 * native["peak_mb"]


def test_both_samplers_against_softmax_at_the_step_temperature(figures):
    from edlm_engine import ops
    from tests.stats import chi_square_pvalue

    V, n, temperature = 262_144, 400_000, 0.6
    logits = (-1.1 * torch.arange(1, V + 1, dtype=torch.float64).log()).float()  # Zipf: a long tail
    exact = torch.softmax(logits.double() / temperature, -1).numpy()
    probs32 = torch.softmax(logits / temperature, -1, dtype=torch.float32)
    native = torch.multinomial(probs32, n, replacement=True, generator=torch.Generator().manual_seed(0))
    engine, _ = ops.categorical(logits[None], n, seed=0, temperature=temperature)  # sample_scored's draw, n times
    for name, draws in (("native float32 multinomial", native), ("engine", engine.ravel())):
        counts = np.bincount(draws.numpy(), minlength=V)
        p = chi_square_pvalue(counts, exact)[0]
        figures(f"chi-square against softmax(logits / {temperature}) on a Zipf row of {V}, {n} draws: {name} p = {p:.3g}")
        if name == "engine":
            assert p > 3.17e-5


def test_report_a_whole_short_generate(figures):
    """A small random DiffusionGemma with V = 262144: generate with the native step and with the engine's."""
    import time

    import transformers

    from edlm_engine.integrations import diffusion_gemma

    text = dict(vocab_size=262_144, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                head_dim=16, intermediate_size=64, num_experts=2, top_k_experts=1, moe_intermediate_size=32)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    torch.manual_seed(0)
    model = transformers.DiffusionGemmaForBlockDiffusion(
        transformers.DiffusionGemmaConfig(text_config=text, vision_config=vision, canvas_length=32)).eval()
    ids = torch.randint(0, 262_144, (4, 8), generator=torch.Generator().manual_seed(1))
    kw = dict(input_ids=ids, max_new_tokens=32, max_denoising_steps=8)
    seconds = {}
    for name in ("native", "engine", "native", "engine"):  # interleaved, best of two
        if name == "engine":
            diffusion_gemma.apply(model, seed=0)
        t0 = time.perf_counter()
        model.generate(**kw)
        seconds[name] = min(seconds.get(name, float("inf")), time.perf_counter() - t0)
        diffusion_gemma.remove(model)
    figures(f"DiffusionGemma generate B=4, one canvas of 32, 8 steps, V=262144 [cpu]: native {seconds['native']:.2f} s, "
            f"engine {seconds['engine']:.2f} s ({seconds['native'] / seconds['engine']:.1f}x)")
    assert seconds["engine"] < seconds["native"]
