"""End-to-end benchmark of EDLM sampling (see e2e.py for the setting)."""

from pathlib import Path

import pytest

from e2e import build_models, run_ours, run_reference
from harness import best_of_interleaved, fresh_process

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def models():
    return build_models()


def _peak(provider):
    return fresh_process(HERE / "e2e.py", "--provider", provider)


@pytest.mark.ratio
def test_ratio_edlm_end_to_end_at_least_2x_faster_with_lower_peak_memory(models):
    bert, gpt2 = models
    ours = run_ours(bert, gpt2)
    ref_tokens, ref_stats = run_reference(bert, gpt2)
    best = best_of_interleaved({"ours": lambda: run_ours(bert, gpt2), "reference": lambda: run_reference(bert, gpt2)},
                               "cpu", repeats=2)
    peak_ours, peak_ref = _peak("ours"), _peak("reference")
    rows = [
        ("ours EDLM", best["ours"], ours.stats["denoiser_calls"], ours.stats["energy_calls"], peak_ours["peak_mb"]),
        ("reference EDLM", best["reference"], ref_stats["denoiser_calls"], ref_stats["energy_calls"],
         peak_ref["peak_mb"]),
    ]
    print("\nprovider          seconds  denoiser_calls  energy_calls  peak_extra_MiB")
    for name, sec, dc, ec, mb in rows:
        print(f"{name:<16}{sec:>9.2f}{dc:>16}{ec:>14}{mb:>16.0f}")
    print(f"speed ratio reference/ours = {best['reference'] / best['ours']:.2f}x, "
          f"peak memory ratio = {peak_ref['peak_mb'] / max(peak_ours['peak_mb'], 1e-9):.1f}x")
    assert best["reference"] / best["ours"] >= 2.0
    assert peak_ours["peak_mb"] < peak_ref["peak_mb"]


def test_report_samplers(models):
    bert, gpt2 = models
    print("\nsampler              seconds  denoiser_calls  energy_calls")
    for name, out in (("ancestral", run_ours(bert, gpt2, energy=False)),
                      ("first_hitting", run_ours(bert, gpt2, sampler="first_hitting", energy=False)),
                      ("EDLM (ancestral)", run_ours(bert, gpt2))):
        st = out.stats
        print(f"{name:<18}{st['seconds']:>10.2f}{st['denoiser_calls']:>16}{st['energy_calls']:>14}")
        assert st["denoiser_calls"] >= 1
