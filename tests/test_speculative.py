"""Speculative decoding (sampler="speculative"): the denoiser drafts, the AR energy verifies."""

import itertools

import numpy as np
import pytest
import torch

import edlm_engine
from edlm_engine.models import AREnergy
from edlm_engine.oracle import HMMLanguage

from .markov import attention_recording, cyclic_chain, pair_counts
from .stats import P_4SE, chi_square_pvalue

L = 5


@pytest.fixture(scope="module")
def tiny():
    lang = HMMLanguage.random(n_states=3, vocab_size=4, seed=1)
    seqs = torch.tensor(list(itertools.product(range(4), repeat=L)))
    return lang, lang.log_prob(seqs).exp()


def _joint_counts(x):
    idx = (x * (4 ** torch.arange(L - 1, -1, -1))).sum(1)
    return np.bincount(idx.numpy(), minlength=4**L)


def _joint_tv(x, probs):
    return float(0.5 * np.abs(_joint_counts(x) / x.shape[0] - probs.numpy()).sum())


def test_exact_mode_samples_the_ar_model_exactly(tiny):
    lang, probs = tiny
    out = edlm_engine.sample(lang.denoiser(), lang.ar_energy(), n=100_000, seq_len=L, sampler="speculative",
                             seed=0, batch_size=25_000)
    assert chi_square_pvalue(_joint_counts(out.tokens), probs.numpy())[0] > P_4SE
    st = out.stats
    assert 1 <= st["denoiser_calls_per_sequence"] <= L and st["ar_calls_per_sequence"] == st["denoiser_calls_per_sequence"]
    assert 0 < st["acceptance_rate"] <= 1 and st["ar_tokens_per_sequence"] > 0


def test_draft_filters_change_the_proposal_not_the_samples(tiny):
    lang, probs = tiny
    out = edlm_engine.sample(lang.denoiser(), lang.ar_energy(), n=100_000, seq_len=L, sampler="speculative", top_k=2,
                             seed=1, batch_size=25_000)
    assert chi_square_pvalue(_joint_counts(out.tokens), probs.numpy())[0] > P_4SE


def test_the_same_test_catches_the_uncorrected_product_chain(tiny):
    lang, probs = tiny
    out = edlm_engine.sample(lang.denoiser(), lang.ar_energy(), n=100_000, seq_len=L, sampler="speculative",
                             poe_weight=0.7, seed=0, batch_size=25_000)
    assert chi_square_pvalue(_joint_counts(out.tokens), probs.numpy())[0] < P_4SE


def test_snis_corrects_the_product_and_argmax_does_not(tiny):
    lang, probs = tiny
    kw = dict(n=20_000, seq_len=L, sampler="speculative", poe_weight=0.7, seed=1, batch_size=5000)
    one = _joint_tv(edlm_engine.sample(lang.denoiser(), lang.ar_energy(), particles=1, **kw).tokens, probs)
    snis = edlm_engine.sample(lang.denoiser(), lang.ar_energy(), particles=16, **kw)
    best = _joint_tv(edlm_engine.sample(lang.denoiser(), lang.ar_energy(), particles=16, selection="argmax",
                                        **kw).tokens, probs)
    floor = _joint_tv(lang.sample(20_000, L, seed=2), probs)
    assert _joint_tv(snis.tokens, probs) < floor + 0.3 * (one - floor)
    assert best > one and 1.0 < snis.stats["mean_ess"] <= 16.0


def test_exact_mode_with_a_prompt_gives_the_exact_continuation():
    chain = cyclic_chain(V=4, stay=0.85)
    prompt = [2, 3, 3]
    out = edlm_engine.sample(chain.denoiser(), chain.ar_energy(), n=20_000, prompt=prompt, gen_length=6,
                             sampler="speculative", verify_window=3, seed=3)
    from scipy import stats as st

    gen = out.tokens[:, 3:]
    counts = pair_counts(gen, 4).numpy()
    exact = chain.pair_marginals(6, prompt).numpy()
    parts = [chi_square_pvalue(counts[i].ravel(), exact[i].ravel()) for i in range(5)]
    assert float(st.chi2.sf(sum(p[1] for p in parts), sum(p[2] for p in parts))) > P_4SE


def test_tokens_do_not_depend_on_the_batch(tiny):
    lang, _ = tiny
    kw = dict(n=6, seq_len=L, sampler="speculative", particles=3, poe_weight=0.5, verify_window=2, seed=4)
    whole = edlm_engine.sample(lang.denoiser(), lang.ar_energy(), **kw)
    split = edlm_engine.sample(lang.denoiser(), lang.ar_energy(), batch_size=1, **kw)
    assert torch.equal(whole.tokens, split.tokens)


def test_speculative_needs_an_ar_energy_and_a_temperature(tiny):
    lang, _ = tiny
    kw = dict(n=1, seq_len=L, sampler="speculative")
    with pytest.raises(ValueError, match="autoregressive energy"):
        edlm_engine.sample(lang.denoiser(), lang.energy(), **kw)
    with pytest.raises(ValueError, match="temperature > 0"):
        edlm_engine.sample(lang.denoiser(), lang.ar_energy(), temperature=0.0, **kw)


def test_lookahead_hides_the_positions_past_it(tiny):
    lang, _ = tiny
    denoiser = attention_recording(lang.denoiser())
    edlm_engine.sample(denoiser, lang.ar_energy(), n=2, seq_len=L, sampler="speculative", lookahead=2, seed=0)
    assert denoiser.seen[0].tolist() == [[True, True, False, False, False]] * 2  # nothing committed yet: 2 visible


def test_log_probs_positions_name_the_argument():
    lang = HMMLanguage.random(n_states=2, vocab_size=3, seed=0)
    energy = AREnergy(lang.ar_log_probs, vocab_size=3)
    x = lang.sample(2, 4, seed=1)
    full = energy.log_probs(x)
    pos = torch.tensor([[3, 0], [1, 1]])
    assert torch.equal(energy.log_probs(x, pos), full[torch.arange(2)[:, None], pos])
    with pytest.raises(ValueError, match="positions"):
        energy.log_probs(x, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="positions"):
        energy.log_probs(x, pos.float())
