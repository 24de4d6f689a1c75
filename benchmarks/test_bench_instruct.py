"""Instruct decoding on LLaDA's vocabulary against the copy of LLaDA's generate (setting in instruct.py).

Each provider runs in a fresh process (python benchmarks/instruct.py --provider ...), which times it once after a
warm-up and measures its peak extra memory; the ratio test asserts the instruct-decoding issue's bars.
"""

from pathlib import Path

import pytest

from harness import fresh_process

HERE = Path(__file__).resolve().parent


def _run(provider, device):
    return fresh_process(HERE / "instruct.py", "--provider", provider, "--device", device, timeout=1200)


@pytest.mark.ratio
def test_ratio_instruct_decoding_at_least_5x_faster_at_a_quarter_of_the_memory(device, figures):
    ours, llada = _run("ours", device), _run("llada", device)
    speed = llada["seconds"] / ours["seconds"]
    memory = ours["peak_mb"] / llada["peak_mb"]
    figures(f"instruct decoding V=126464 B=2 prompt 16 gen 128 block 32 steps 16 [{device}]: ours "
            f"{ours['seconds']:.2f} s / {ours['peak_mb']:.0f} MiB, LLaDA generate {llada['seconds']:.2f} s / "
            f"{llada['peak_mb']:.0f} MiB: {speed:.1f}x faster, {100 * memory:.0f}% of its peak extra memory")
    assert speed >= 5.0
    assert memory <= 0.25
