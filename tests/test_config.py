"""SampleConfig: one definition of every option, behind sample(), the command line and the JSONL settings."""

import dataclasses
import json

import numpy as np
import pytest
import torch

import edlm_engine
from edlm_engine import SampleConfig, cli
from edlm_engine.oracle import HMMLanguage
from edlm_engine.samplers import SAMPLERS, AncestralSampler, register_sampler


@pytest.fixture(scope="module")
def lang():
    return HMMLanguage.random(n_states=3, vocab_size=6, seed=0)


def test_every_field_is_validated_with_its_name():
    bad = dict(seq_len=0, steps=1.5, sampler="nope", schedule="cosine", eps=1.0, cache="yes", temperature=-1,
               is_size=0, is_window=(0.5, 0.2), is_temperature=float("inf"), energy_positions="some", seed=-1,
               first_index=2**40, precision="fp16", dtype="int8", mask_id=-3, trust_remote_code=1,
               allow_vocab_mismatch=None, batch_size=0, device="gpu0", progress="no", prefix=[[1, 2], [3]],
               template="abc", prompt=5, chat_template="yes", gen_length=0, block_length=-1, unmasking="low",
               threshold=1.5, entropy_bound=-1.0, top_k=0, top_p=0.0, min_p=2.0, cfg_scale=-1.0, eos_id=-2,
               logits_shift="x", particles=0, poe_weight=1.5, selection="best", verify_window=0, lookahead=0)
    assert set(bad) == {f.name for f in dataclasses.fields(SampleConfig)}  # a new field needs a case here
    for name, value in bad.items():
        with pytest.raises(ValueError, match=f"SampleConfig.{name}"):
            SampleConfig(**{name: value})


def test_json_round_trip_and_numpy_integers():
    cfg = SampleConfig(steps=np.int64(12), prefix=torch.tensor([3, 4]), is_window=[0.0, 1.0], device="cpu")
    data = json.loads(json.dumps(cfg.to_dict()))
    assert SampleConfig.from_dict(data) == cfg and cfg.steps == 12 and cfg.prefix == [3, 4]
    assert cfg.is_window == (0.0, 1.0)
    with pytest.raises(TypeError, match="'stepz' .*did you mean 'steps'"):
        SampleConfig.from_dict({"stepz": 3})


def test_cfg_scale_needs_a_prompt():
    with pytest.raises(ValueError, match="cfg_scale = 1.5 .* needs a prompt"):
        SampleConfig(cfg_scale=1.5, seq_len=8)
    assert SampleConfig(cfg_scale=1.5, prompt=[1, 2]).cfg_scale == 1.5


def test_unknown_keyword_of_sample_is_named(lang):
    with pytest.raises(TypeError, match="unknown sampling option 'temprature'"):
        edlm_engine.sample(lang.denoiser(), n=1, seq_len=4, temprature=0.5)
    with pytest.raises(TypeError, match="config must be a SampleConfig"):
        edlm_engine.sample(lang.denoiser(), n=1, config={"steps": 2})


def test_config_and_keywords_give_the_same_tokens(lang):
    kw = dict(seq_len=8, steps=6, is_size=3, is_window=(0.0, 1.0), seed=4, batch_size=3)
    a = edlm_engine.sample(lang.denoiser(), lang.energy(), n=5, config=SampleConfig(**kw))
    b = edlm_engine.sample(lang.denoiser(), lang.energy(), n=5, **kw)
    c = edlm_engine.sample(lang.denoiser(), lang.energy(), n=5, config=SampleConfig(seq_len=8, steps=2), **{
        k: v for k, v in kw.items() if k != "seq_len"})
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.tokens, c.tokens)


def test_a_registered_sampler_is_found_by_name(lang):
    @register_sampler
    class Greedy(AncestralSampler):
        """Ancestral steps at temperature 0: only here to show that the registry is the one list of samplers."""

        name = "test-greedy"

        def _rng(self):
            return dict(super()._rng(), temperature=0.0)

    try:
        out = edlm_engine.sample(lang.denoiser(), n=2, seq_len=5, steps=3, sampler="test-greedy", seed=1)
        ref = edlm_engine.sample(lang.denoiser(), n=2, seq_len=5, steps=3, temperature=0.0, seed=1)
        assert torch.equal(out.tokens, ref.tokens) and out.stats["sampler"] == "test-greedy"
    finally:
        del SAMPLERS["test-greedy"]
    with pytest.raises(ValueError, match="SampleConfig.sampler must be one of"):
        SampleConfig(sampler="test-greedy")


def test_cli_help_lists_every_field(capsys):
    with pytest.raises(SystemExit):
        cli.main(["sample", "--help"])
    out = capsys.readouterr().out
    for f in dataclasses.fields(SampleConfig):
        assert "--" + f.name.replace("_", "-") in out, f.name


def test_cli_jsonl_settings_are_the_config_and_resume(tmp_path):
    out = tmp_path / "s.jsonl"
    args = ["sample", "--model", "oracle", "--energy", "oracle", "-n", "6", "--seq-len", "8", "--steps", "4",
            "--is-window", "0", "1", "--seed", "9", "--batch-size", "4", "--quiet", "--out", str(out)]
    assert cli.main(args) == 0
    rows = [json.loads(line) for line in open(out)]
    cfg = SampleConfig.from_dict(rows[0]["settings"])
    assert rows[0]["settings"] == cfg.to_dict() and cfg.steps == 4 and cfg.seed == 9
    lang = HMMLanguage.english()
    again = edlm_engine.sample(lang.denoiser(), lang.energy(), n=6, config=cfg)
    assert again.tokens.tolist() == [r["tokens"] for r in rows]
    # Resuming with another batch size is the same run; with other steps it is not.
    assert cli.main([*args[:-1], str(out), "--resume", "--batch-size", "1"]) == 0
    assert cli.main([*[a if a != "4" else "5" for a in args], "--resume"]) == 2


def test_a_failed_cli_run_creates_no_file(tmp_path, capsys):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{ not json")
    out = tmp_path / "o.jsonl"
    assert cli.main(["sample", "--model", str(broken), "-n", "2", "--seq-len", "4", "--out", str(out)]) != 0
    assert not out.exists()
    assert cli.main(["sample", "--model", "oracle", "-n", "2", "--steps", "0", "--out", str(out)]) == 2
    assert "--steps must be an int >= 1" in capsys.readouterr().err and not out.exists()


def test_cli_mistyped_relative_path_and_ctrl_c(tmp_path, monkeypatch, capsys):
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    assert cli.main(["sample", "--model", "models/bert", "-n", "1", "--seq-len", "4", "--out", "o.jsonl"]) == 2
    assert "no such file or directory" in capsys.readouterr().err

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(edlm_engine.sampler, "sample", interrupted)
    assert cli.main(["sample", "--model", "oracle", "-n", "2", "--seq-len", "4", "--out", "o.jsonl", "--quiet"]) == 130
    err = capsys.readouterr().err.strip()
    assert "interrupted" in err and len(err.splitlines()) == 1 and "Traceback" not in err
