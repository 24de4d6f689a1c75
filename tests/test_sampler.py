"""Whole-sampler tests against a Markov chain whose denoiser and likelihood are exact."""

import numpy as np
import pytest
import torch

import edlm_engine
from edlm_engine import Energy, LogLikelihoodEnergy

from .markov import cyclic_chain, pair_counts, pair_tv
from .stats import P_4SE, chi_square_pvalue

L = 6


@pytest.fixture(scope="module")
def chain():
    return cyclic_chain(V=4, stay=0.85)


def _pair_pvalue(x, chain):
    """Pooled chi-square of adjacent-pair counts over positions (independent multinomials per position)."""
    counts = pair_counts(x, chain.vocab_size).numpy()
    probs = chain.pair_marginals(x.shape[1]).numpy()
    stats = [chi_square_pvalue(counts[i].ravel(), probs[i].ravel()) for i in range(counts.shape[0])]
    from scipy import stats as st

    total = sum(s[1] for s in stats)
    df = sum(s[2] for s in stats)
    return float(st.chi2.sf(total, df))


def test_markov_oracle_is_exact(chain):
    # the test's oracle itself: posterior marginals against brute-force enumeration
    import itertools

    x_t = torch.tensor([[4, 2, 4, 4, 0, 4]])
    seqs = torch.tensor(list(itertools.product(range(4), repeat=L)))
    ok = ((x_t == 4) | (seqs == x_t)).all(1)
    w = torch.exp(chain.log_prob(seqs)) * ok
    brute = torch.stack([torch.zeros(4, dtype=torch.float64).index_add(0, seqs[:, i], w) for i in range(L)]) / w.sum()
    assert torch.allclose(chain.posterior_marginals(x_t)[0], brute, atol=1e-12)
    assert torch.isclose(torch.exp(chain.log_prob(seqs)).sum(), torch.tensor(1.0, dtype=torch.float64))


def test_ancestral_with_many_steps_matches_the_chain(chain):
    out = edlm_engine.sample(chain.denoiser(), n=20_000, seq_len=L, steps=256, seed=1)
    assert _pair_pvalue(out.tokens, chain) > P_4SE
    assert out.stats["denoiser_calls"] <= 256


def test_first_hitting_matches_the_chain(chain):
    out = edlm_engine.sample(chain.denoiser(), n=20_000, seq_len=L, sampler="first_hitting", seed=2)
    assert _pair_pvalue(out.tokens, chain) > P_4SE
    assert out.stats["denoiser_calls"] == L


def test_caching_changes_nothing(chain):
    a = edlm_engine.sample(chain.denoiser(), n=3000, seq_len=L, steps=64, seed=3, cache=True)
    b = edlm_engine.sample(chain.denoiser(), n=3000, seq_len=L, steps=64, seed=3, cache=False)
    assert torch.equal(a.tokens, b.tokens)
    assert b.stats["denoiser_calls"] == 64
    # one sequence changes at most L times, so at most L denoiser calls (plus none for the final fill)
    one = edlm_engine.sample(chain.denoiser(), n=1, seq_len=L, steps=64, seed=3)
    assert one.stats["denoiser_calls"] <= L


def test_parallel_decoding_has_a_gap_that_edlm_closes(chain):
    n = 20_000
    energy = LogLikelihoodEnergy(chain.log_prob)
    plain = edlm_engine.sample(chain.denoiser(), n=n, seq_len=L, steps=2, seed=4)
    edlm = edlm_engine.sample(chain.denoiser(), energy, n=n, seq_len=L, steps=2, is_size=8, is_window=(0.0, 1.0), seed=4)
    # the reference code's sign: weights softmax(+E) favour the candidates the model likes least
    wrong = Energy(lambda x0, x_t, log_q: -energy(x0, x_t, log_q))
    flipped = edlm_engine.sample(chain.denoiser(), wrong, n=n, seq_len=L, steps=2, is_size=8, is_window=(0.0, 1.0),
                                 seed=4)
    exact = chain.sample(n, L, seed=0)
    tv = {k: pair_tv(v, chain) for k, v in
          dict(plain=plain.tokens, edlm=edlm.tokens, flipped=flipped.tokens, exact=exact).items()}
    print(tv)
    assert tv["edlm"] <= 0.65 * tv["plain"], tv
    assert tv["flipped"] > tv["plain"], tv
    # Step one scores every sequence; step two only those whose x_t changed (the others keep their x0*).
    assert edlm.stats["energy_calls"] == 2 and 8 * n < edlm.stats["candidates_scored"] < 2 * 8 * n
    assert 1.0 <= edlm.stats["mean_ess"] <= 8.0


def test_samples_do_not_depend_on_batch_size(chain):
    energy = LogLikelihoodEnergy(chain.log_prob)
    kw = dict(n=13, seq_len=L, steps=5, is_size=3, is_window=(0.3, 1.0), seed=7)
    a = edlm_engine.sample(chain.denoiser(), energy, **kw)
    b = edlm_engine.sample(chain.denoiser(), energy, batch_size=4, **kw)
    assert torch.equal(a.tokens, b.tokens)
    # Only sequences whose x_t changed are rescored, so the count does not depend on the batch split either.
    one = edlm_engine.sample(chain.denoiser(), energy, batch_size=1, **{**kw, "steps": 40})
    many = edlm_engine.sample(chain.denoiser(), energy, **{**kw, "steps": 40})
    assert torch.equal(one.tokens, many.tokens)
    assert one.stats["candidates_scored"] == many.stats["candidates_scored"] < 3 * 13 * many.stats["energy_calls"]
    c = edlm_engine.sample(chain.denoiser(), n=13, seq_len=L, sampler="first_hitting", seed=7)
    d = edlm_engine.sample(chain.denoiser(), n=13, seq_len=L, sampler="first_hitting", seed=7, batch_size=3)
    assert torch.equal(c.tokens, d.tokens)
    e = edlm_engine.sample(chain.denoiser(), energy, **{**kw, "seed": 8})
    assert not torch.equal(a.tokens, e.tokens)


def test_prefix_and_template_are_kept(chain):
    out = edlm_engine.sample(chain.denoiser(), n=50, seq_len=L, steps=8, prefix=[2, 3], seed=0)
    assert (out.tokens[:, :2] == torch.tensor([2, 3])).all()
    per_sample = torch.randint(0, 4, (50, 1))
    out = edlm_engine.sample(chain.denoiser(), n=50, seq_len=L, steps=8, prefix=per_sample, seed=0)
    assert torch.equal(out.tokens[:, :1], per_sample)
    template = torch.tensor([4, 1, 4, 4, 3, 4])
    out = edlm_engine.sample(chain.denoiser(), n=50, steps=8, template=template, seed=0)
    assert out.tokens.shape == (50, L)
    assert (out.tokens[:, [1, 4]] == torch.tensor([1, 3])).all()
    assert not (out.tokens == 4).any()


def test_temperature_zero_and_fp32_gumbel_run(chain):
    out = edlm_engine.sample(chain.denoiser(), n=4, seq_len=L, steps=4, temperature=0.0, seed=0)
    assert not (out.tokens == chain.mask_id).any()
    out = edlm_engine.sample(chain.denoiser(), n=4, seq_len=L, steps=4, precision="fp32-gumbel", seed=0, progress=True)
    assert out.stats["denoiser_calls"] >= 1 and out.stats["tokens_per_second"] > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=0), "steps"),
        (dict(n=0), "n must"),
        (dict(is_size=0), "is_size"),
        (dict(is_window=(0.5, 1.2)), "is_window"),
        (dict(is_window=(0.9, 0.1)), "is_window"),
        (dict(sampler="euler"), "sampler"),
        (dict(prefix=[1] * 7), "prefix"),
        (dict(template=[4] * 5), "template has length"),
        (dict(temperature=-1.0), "temperature"),
        (dict(energy_positions="some"), "energy_positions"),
        (dict(precision="fp16"), "precision"),
        (dict(batch_size=0), "batch_size"),
    ],
)
def test_bad_arguments_are_named(chain, kwargs, match):
    with pytest.raises(ValueError, match=match):
        edlm_engine.sample(chain.denoiser(), **{"n": 2, "seq_len": L, "steps": 2, **kwargs})


def test_callable_without_mask_id_or_length_is_refused():
    def fn(x_t, t):
        return torch.zeros(*x_t.shape, 3)

    with pytest.raises(ValueError, match="mask_id"):
        edlm_engine.sample(fn, n=1, seq_len=4)
    fn.mask_id = 2
    with pytest.raises(ValueError, match="seq_len is needed"):
        edlm_engine.sample(fn, n=1)


def test_first_index_continues_a_larger_run(chain):
    energy = LogLikelihoodEnergy(chain.log_prob)
    kw = dict(seq_len=L, steps=4, is_size=2, is_window=(0.0, 1.0), seed=2)
    whole = edlm_engine.sample(chain.denoiser(), energy, n=9, **kw)
    tail = edlm_engine.sample(chain.denoiser(), energy, n=4, first_index=5, **kw)
    assert torch.equal(whole.tokens[5:], tail.tokens)
