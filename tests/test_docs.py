"""The examples in the public docstrings run and say what they show."""

import doctest

import pytest

import edlm_engine
from edlm_engine import config, models, ops, oracle, oracle_preset, sampler, samplers, schedules


@pytest.mark.parametrize("module", [edlm_engine, ops, sampler, samplers, config, models, schedules, oracle, oracle_preset], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert module is edlm_engine or result.attempted > 0


def test_readme_ops_example_runs():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## The ops", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
