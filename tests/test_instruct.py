"""Instruct-model decoding: prompts, blocks, scored unmasking rules, filters, CFG, EOS, shifted logits."""

import numpy as np
import pytest
import torch

import edlm_engine
from edlm_engine import SampleConfig
from edlm_engine.oracle import HMMLanguage, pair_tv
from edlm_engine.samplers import choose_commits, commit_schedule

from .markov import attention_recording, cyclic_chain, pair_counts
from .stats import P_4SE, chi_square_pvalue

PROMPT = [2, 3, 3]


@pytest.fixture(scope="module")
def chain():
    return cyclic_chain(V=4, stay=0.85)


def _conditional_pair_pvalue(gen, lang, prompt):
    """Pooled chi-square of the continuation's adjacent pairs against the exact conditional pair marginals."""
    from scipy import stats as st

    counts = pair_counts(gen, lang.vocab_size).numpy()
    probs = lang.pair_marginals(gen.shape[1], prompt).numpy()
    parts = [chi_square_pvalue(counts[i].ravel(), probs[i].ravel()) for i in range(counts.shape[0])]
    return float(st.chi2.sf(sum(p[1] for p in parts), sum(p[2] for p in parts)))


@pytest.mark.parametrize("block_length", [None, 2])
def test_exact_denoiser_with_a_prompt_gives_the_exact_continuation(chain, block_length):
    out = edlm_engine.sample(chain.denoiser(), n=20_000, prompt=PROMPT, gen_length=6, block_length=block_length,
                             steps=240, seed=1)
    assert out.tokens.shape == (20_000, 9) and (out.tokens[:, :3] == torch.tensor(PROMPT)).all()
    assert _conditional_pair_pvalue(out.tokens[:, 3:], chain, PROMPT) > P_4SE


def test_first_hitting_with_a_prompt_and_blocks_is_exact(chain):
    out = edlm_engine.sample(chain.denoiser(), n=20_000, prompt=PROMPT, gen_length=6, block_length=3,
                             sampler="first_hitting", seed=2)
    assert _conditional_pair_pvalue(out.tokens[:, 3:], chain, PROMPT) > P_4SE
    assert out.stats["denoiser_calls"] == 6


def test_the_same_test_catches_a_sampler_that_ignores_the_prompt(chain):
    x = chain.sample(20_000, 6, seed=3)  # exact samples, but unconditional
    assert _conditional_pair_pvalue(x, chain, PROMPT) < P_4SE


def test_oracle_conditional_samples_match_brute_force():
    import itertools

    lang = HMMLanguage.random(n_states=3, vocab_size=4, seed=1)
    seqs = torch.tensor([PROMPT + list(c) for c in itertools.product(range(4), repeat=3)])
    p = lang.log_prob(seqs).exp()
    p = p / p.sum()
    brute = torch.zeros(4, 4, dtype=torch.float64)
    for (a, b, _), w in zip(seqs[:, 3:].tolist(), p.tolist()):
        brute[a, b] += w
    assert torch.allclose(lang.pair_marginals(3, PROMPT)[0], brute, atol=1e-12)
    x = lang.sample(30_000, 3, seed=2, prompt=PROMPT)
    counts = np.bincount((x[:, 0] * 4 + x[:, 1]).numpy(), minlength=16)
    assert chi_square_pvalue(counts, brute.ravel().numpy())[0] > P_4SE


def _fixed_denoiser(logits_row, mask_id):
    """A time-agnostic denoiser giving every position the same logits."""

    def denoiser(x_t, t):
        return logits_row.float().expand(*x_t.shape, logits_row.shape[0])

    denoiser.time_agnostic = True
    denoiser.mask_id = mask_id
    return denoiser


def test_filters_and_temperature_in_the_sampler():
    V = 8
    logits = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, float("-inf")], dtype=torch.float64)
    den = _fixed_denoiser(logits, V - 1)
    for unmasking in ("random", "confidence"):
        out = edlm_engine.sample(den, n=4000, seq_len=10, steps=10, top_k=4, top_p=0.85, temperature=0.8, seed=3,
                                 unmasking=unmasking)
        z = logits / 0.8
        keep = torch.zeros(V, dtype=torch.bool)
        keep[:3] = True  # top 4, then the smallest set reaching 0.85 of their mass: the top 3
        probs = torch.softmax(torch.where(keep, z, float("-inf")), -1)
        assert float(torch.softmax(z[:4], -1)[:2].sum()) < 0.85 <= float(torch.softmax(z[:4], -1)[:3].sum())
        counts = np.bincount(out.tokens.ravel().numpy(), minlength=V)
        assert counts[3:].sum() == 0  # never outside the kept set, whatever the rule
        if unmasking == "random":  # confidence ordering favours the likely tokens: exact only with random
            assert chi_square_pvalue(counts, probs.numpy())[0] > P_4SE


def test_classifier_free_guidance_draws_from_the_guided_distribution():
    V, mask = 5, 4
    cond = torch.tensor([1.0, 0.0, 0.5, -1.0, float("-inf")])
    uncond = torch.tensor([0.0, 0.5, 0.0, 0.0, float("-inf")])

    def denoiser(x_t, t):  # the prompt (position 0) masked means the unconditional model
        seen = (x_t[:, :1] != mask)[..., None]
        return torch.where(seen, cond, uncond).expand(*x_t.shape, V)

    denoiser.time_agnostic, denoiser.mask_id = True, mask
    out = edlm_engine.sample(denoiser, n=4000, prompt=[1], gen_length=8, steps=8, cfg_scale=1.5, seed=4)
    guided = uncond[:4] + 2.5 * (cond[:4] - uncond[:4])
    counts = np.bincount(out.tokens[:, 1:].ravel().numpy(), minlength=V)
    assert chi_square_pvalue(counts[:4], torch.softmax(guided.double(), -1).numpy())[0] > P_4SE
    assert out.stats["denoiser_calls"] >= 2  # two forward passes per step


def test_each_rule_commits_the_positions_it_should():
    masked = torch.tensor([[True, True, True, True, False]])
    # p_draw, p_top1, p_top2, entropy for 5 positions
    scores = torch.tensor([[[0.9, 0.2, 0.6, 0.5, 1.0]], [[0.9, 0.5, 0.6, 0.9, 1.0]], [[0.05, 0.4, 0.3, 0.0, 0.0]],
                           [[0.5, 2.0, 1.0, 0.3, 0.0]]], dtype=torch.float64)
    two = torch.tensor([2])
    def pick(rule):
        return choose_commits(scores, masked, SampleConfig(unmasking=rule), two).tolist()

    assert pick("confidence") == [[True, False, True, False, False]]  # p_draw 0.9 and 0.6
    assert pick("margin") == [[True, False, False, True, False]]  # margins 0.85, 0.1, 0.3, 0.9
    assert pick("entropy") == [[True, False, False, True, False]]  # entropies 0.5, 2.0, 1.0, 0.3
    cfg = SampleConfig(unmasking="confidence", threshold=0.55)
    assert choose_commits(scores, masked, cfg, None).tolist() == [[True, False, True, False, False]]
    cfg = SampleConfig(unmasking="confidence", threshold=0.95)  # nothing reaches it: the best one still commits
    assert choose_commits(scores, masked, cfg, None).tolist() == [[True, False, False, False, False]]
    # EB-Sampler: entropies 0.3, 0.5, 1.0, 2.0 in order; run sums minus the largest: 0, 0.3, 0.8, 1.8
    for gamma, want in ((0.0, [0, 0, 0, 1, 0]), (0.3, [1, 0, 0, 1, 0]), (0.8, [1, 0, 1, 1, 0]), (5.0, [1, 1, 1, 1, 0])):
        cfg = SampleConfig(unmasking="entropy", entropy_bound=gamma)
        assert choose_commits(scores, masked, cfg, None).long().tolist() == [want], gamma
    assert commit_schedule(torch.tensor([7, 2]), 3).tolist() == [[3, 2, 2], [1, 1, 0]]


def test_threshold_commits_every_confident_position_in_one_step():
    mask = 3
    sure = torch.tensor([5.0, 0.0, 0.0, float("-inf")])  # p_draw about 0.99
    unsure = torch.tensor([0.0, 0.0, 0.0, float("-inf")])
    calls = []

    def denoiser(x_t, t):
        calls.append(x_t.clone())
        rows = torch.stack([sure if i % 2 == 0 else unsure for i in range(x_t.shape[1])])
        return rows.expand(x_t.shape[0], -1, -1)

    denoiser.time_agnostic, denoiser.mask_id = True, mask
    edlm_engine.sample(denoiser, n=1, seq_len=6, unmasking="confidence", threshold=0.9, seed=0)
    after_first = calls[1][0]
    assert (after_first[::2] != mask).all() and (after_first[1::2] == mask).sum() >= 2


def test_eos_finishes_a_sequence_and_later_blocks_cost_nothing():
    mask, eos = 5, 1
    logits = torch.tensor([0.0, 8.0, 0.0, 0.0, 0.0, float("-inf")])
    den = _fixed_denoiser(logits, mask)
    out = edlm_engine.sample(den, n=2, prompt=[0, 2], gen_length=6, block_length=2, steps=6, eos_id=eos,
                             unmasking="confidence", seed=0)
    gen = out.tokens[:, 2:]
    assert (gen == eos).all()
    assert out.stats["denoiser_calls"] == 2  # the first block's two steps; blocks 2 and 3 were never computed
    plain = edlm_engine.sample(den, n=2, prompt=[0, 2], gen_length=6, block_length=2, steps=6, eos_id=-1,
                               unmasking="confidence", seed=0)
    assert plain.stats["denoiser_calls"] == 6


def test_shifted_logits_give_the_same_tokens(chain):
    base = chain.denoiser()

    def shifted(x_t, t):  # output i predicts position i + 1, as Dream's
        out = base(x_t, t)
        return torch.cat([out[:, 1:], out[:, :1]], 1)

    shifted.time_agnostic, shifted.mask_id = True, base.mask_id
    for kw in (dict(unmasking="random"), dict(unmasking="margin", block_length=3), dict(sampler="first_hitting")):
        a = edlm_engine.sample(base, n=50, prompt=PROMPT, gen_length=6, steps=6, seed=5, **kw)
        b = edlm_engine.sample(shifted, n=50, prompt=PROMPT, gen_length=6, steps=6, seed=5, logits_shift=True, **kw)
        assert torch.equal(a.tokens, b.tokens), kw
    with pytest.raises(ValueError, match="logits_shift"):
        edlm_engine.sample(shifted, n=1, seq_len=4, logits_shift=True)


def test_prompts_of_different_lengths_are_left_padded_with_an_attention_mask(chain):
    base = chain.denoiser()
    denoiser = attention_recording(base)
    seen = denoiser.seen
    out = edlm_engine.sample(denoiser, n=3, prompt=[[1, 2, 3], [0]], gen_length=4, steps=4, seed=0)
    assert out.tokens[:, :3].tolist()[0] == [1, 2, 3] and out.tokens[1, 2] == 0 and out.tokens[2, :3].tolist() == [
        1, 2, 3]
    assert seen[0].tolist()[1] == [False, False, True, True, True, True, True]
    assert not (out.tokens[:, 3:] == base.mask_id).any()
    split = edlm_engine.sample(denoiser, n=3, prompt=[[1, 2, 3], [0]], gen_length=4, steps=4, seed=0, batch_size=1)
    assert torch.equal(out.tokens, split.tokens)


def test_edlm_inside_blocks_closes_part_of_the_gap():
    lang = HMMLanguage.random(n_states=4, vocab_size=6, seed=3, concentration=0.2)
    prompt = [1, 4]
    kw = dict(n=4000, prompt=prompt, gen_length=8, block_length=4, steps=2, seed=6)
    plain = edlm_engine.sample(lang.denoiser(), **kw)
    edlm = edlm_engine.sample(lang.denoiser(), lang.energy(), is_size=8, is_window=(0.0, 1.0), **kw)
    floor = pair_tv(lang.sample(4000, 8, seed=7, prompt=prompt), lang, prompt)
    gap_plain = pair_tv(plain.tokens[:, 2:], lang, prompt) - floor
    gap_edlm = pair_tv(edlm.tokens[:, 2:], lang, prompt) - floor
    assert edlm.stats["energy_calls"] >= 2 and gap_edlm < 0.8 * gap_plain


def test_bad_instruct_options_are_clear(chain):
    den = chain.denoiser()
    with pytest.raises(ValueError, match="block_length 4 must divide the 6"):
        edlm_engine.sample(den, n=1, prompt=PROMPT, gen_length=6, block_length=4)
    with pytest.raises(ValueError, match="multiple of the number of blocks"):
        edlm_engine.sample(den, n=1, prompt=PROMPT, gen_length=6, block_length=2, steps=4)
    with pytest.raises(ValueError, match="no tokenizer"):
        edlm_engine.sample(den, n=1, prompt="hello", gen_length=4)
    with pytest.raises(ValueError, match="unmasking='random'"):
        edlm_engine.sample(den, chain.energy(), n=1, seq_len=4, unmasking="confidence")
    with pytest.raises(ValueError, match="leave prefix, template and seq_len unset"):
        SampleConfig(prompt=[1], seq_len=8)


def test_cli_prompts_from_the_command_line_and_a_file(tmp_path):
    import json

    from edlm_engine import cli

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": [1, 2, 3]}\n[4, 5]\n')
    out = tmp_path / "o.jsonl"
    args = ["sample", "--model", "oracle", "-n", "4", "--gen-length", "6", "--block-length", "3", "--steps", "4",
            "--unmasking", "margin", "--top-k", "20", "--quiet", "--prompt-file", str(prompts), "--out", str(out)]
    assert cli.main(args) == 0
    rows = [json.loads(line) for line in open(out)]
    # sample i takes prompt i % 2; the shorter prompt is left-padded (here with the mask id: no tokenizer)
    assert [r["tokens"][:3] for r in rows[::2]] == [[1, 2, 3]] * 2
    assert [r["tokens"][1:3] for r in rows[1::2]] == [[4, 5]] * 2 and len(rows[0]["tokens"]) == 9
    assert rows[0]["settings"]["prompt"] == [[1, 2, 3], [4, 5]] and rows[0]["settings"]["unmasking"] == "margin"
    again = tmp_path / "again.jsonl"
    assert cli.main([a if a != str(out) else str(again) for a in args] + ["--batch-size", "1"]) == 0
    assert [json.loads(line)["tokens"] for line in open(again)] == [r["tokens"] for r in rows]
    assert cli.main(["sample", "--model", "oracle", "-n", "1", "--prompt", "the cat", "--out",
                     str(tmp_path / "t.jsonl"), "--quiet"]) == 1  # text needs a tokenizer: one line, exit 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_instruct_decoding_gives_the_same_tokens_on_cpu_and_cuda(chain):
    for kw in (dict(unmasking="random"), dict(unmasking="confidence", block_length=3),
               dict(unmasking="entropy", entropy_bound=0.5), dict(unmasking="margin", top_k=3, top_p=0.9),
               dict(sampler="first_hitting", block_length=3)):
        cpu = edlm_engine.sample(chain.denoiser(), n=64, prompt=PROMPT, gen_length=6, steps=6, seed=7, **kw)
        gpu = edlm_engine.sample(chain.denoiser(), n=64, prompt=PROMPT, gen_length=6, steps=6, seed=7, device="cuda",
                                 **kw)
        assert torch.equal(cpu.tokens, gpu.tokens.cpu()), kw
