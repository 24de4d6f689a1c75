"""A causal LM's window conditionals with its key/value cache (edlm_engine/ar_cache.py), and speculative decoding
through it: the cache must give what reading whole rows gives, hide padding, and never re-encode the prefix.
Also a prompt's padding in EDLM's energy: unread and unscored, whatever its id."""

import itertools

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel, MistralConfig, MistralForCausalLM

import edlm_engine
from edlm_engine.ar_cache import CachedConditionals, RecomputedConditionals

from .stats import P_4SE, chi_square_pvalue

BOS = 0


def _gpt2(vocab, seed=0):
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=2, n_positions=48,
                                      bos_token_id=BOS, eos_token_id=BOS)).eval()


@pytest.fixture(scope="module")
def energy(tmp_path_factory):
    path = tmp_path_factory.mktemp("ar") / "gpt2"
    _gpt2(50).save_pretrained(path)
    return edlm_engine.CausalLMEnergy(str(path))  # loaded back by path through the real loading code


def _window_logp(conditionals, rows, c, width):
    return torch.log_softmax(conditionals.window(rows, c, width, c < rows.shape[1]).double(), -1)


def test_cached_windows_match_reading_whole_rows(energy):
    B, K, L, start, W = 3, 2, 20, 4, 5
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(1, 50, (B, L), generator=gen)
    x[1, 0] = BOS  # this row's first token is its context
    cached = energy.conditionals(x, start, K)
    assert isinstance(cached, CachedConditionals)
    rows, c = x.repeat_interleave(K, 0), torch.full((B * K,), start)
    rounds = 0
    while (c < L).any():
        rounds += 1
        got = _window_logp(cached, rows, c, W + 1)
        whole = energy.log_probs(rows, (c[:, None] + torch.arange(W + 1)).clamp(max=L - 1))
        inside = (c[:, None] + torch.arange(W + 1)) < L
        assert (got - whole).abs().amax(-1)[inside].max() < 1e-5
        keep = (torch.arange(B) * K + torch.randint(0, K, (B,), generator=gen)).repeat_interleave(K)
        cached.select(keep)
        rows, c = rows[keep], c[keep]
        count = torch.minimum(torch.randint(1, W + 2, (B,), generator=gen).repeat_interleave(K), L - c)
        cached.advance(count)
        drafts = torch.randint(1, 50, rows.shape, generator=gen)  # the next round's drafts differ per particle
        rows = torch.where(torch.arange(L)[None] < (c + count)[:, None], rows, drafts)
        c = c + count
    assert rounds >= 3 and cached.keep.shape[1] <= L + 1  # cropped each round, never the sum of the windows


def test_a_prompts_left_padding_is_invisible(energy):
    prompt = torch.tensor([[7, 8, 9]])
    x_alone = torch.cat([prompt, torch.tensor([[11, 12, 13, 14]])], 1)
    x_padded = torch.cat([torch.tensor([[5, 5]]), x_alone], 1)
    seen = torch.tensor([[False, False] + [True] * 7])
    alone = energy.conditionals(x_alone, 3)
    padded = energy.conditionals(x_padded, 5, attention=seen)
    reread = RecomputedConditionals(energy, 1, "cpu", seen)  # the path of models whose cache cannot be cropped
    for c_alone in (3, 5):
        a = _window_logp(alone, x_alone, torch.tensor([c_alone]), 2)
        p = _window_logp(padded, x_padded, torch.tensor([c_alone + 2]), 2)
        r = _window_logp(reread, x_padded, torch.tensor([c_alone + 2]), 2)
        assert torch.allclose(a, p, atol=1e-5) and torch.allclose(a, r, atol=1e-5)
        alone.advance(torch.tensor([2]))
        padded.advance(torch.tensor([2]))


def test_sliding_window_models_fall_back_to_reading_whole_rows():
    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(vocab_size=20, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                             num_attention_heads=2, num_key_value_heads=1, sliding_window=4,
                                             bos_token_id=BOS)).eval()
    conditionals = edlm_engine.CausalLMEnergy(model).conditionals(torch.ones(2, 6, dtype=torch.long), 2)
    assert isinstance(conditionals, RecomputedConditionals)


def _bert_drafter(vocab, mask_id, positions=16):
    torch.manual_seed(3)
    return BertForMaskedLM(BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=64, max_position_embeddings=positions,
                                      pad_token_id=mask_id)).eval()


def test_speculative_decoding_through_the_cache_samples_the_causal_lm_exactly():
    V, L = 5, 3
    ar = _gpt2(V, seed=2)
    out = edlm_engine.sample(_bert_drafter(V + 1, V), ar, n=30_000, seq_len=L, sampler="speculative", mask_id=V,
                             verify_window=2, seed=0, batch_size=10_000)
    seqs = torch.tensor(list(itertools.product(range(V), repeat=L)))
    with torch.no_grad():  # the exact law, from the model itself: BOS, then the sequence
        logits = ar(torch.cat([torch.full((len(seqs), 1), BOS), seqs], 1)).logits[:, :-1].double()
    probs = torch.log_softmax(logits, -1).gather(-1, seqs[..., None]).squeeze(-1).sum(1).exp()
    counts = np.bincount((out.tokens * V ** torch.arange(L - 1, -1, -1)).sum(1).numpy(), minlength=V**L)
    assert chi_square_pvalue(counts, probs.numpy())[0] > P_4SE


def test_the_cache_reads_each_window_once_and_the_prompt_once_per_sequence():
    V, W, K = 12, 3, 4
    ar = _gpt2(V, seed=4)
    calls = []
    forward = ar.transformer.forward
    ar.transformer.forward = lambda *a, **kw: (calls.append(tuple(kw["input_ids"].shape)), forward(*a, **kw))[1]
    out = edlm_engine.sample(_bert_drafter(V + 1, V), ar, n=2, prompt=[[1, 2, 3, 4, 5]], gen_length=9,
                             sampler="speculative", particles=K, poe_weight=0.5, mask_id=V, verify_window=W, seed=1)
    assert calls[0] == (2, 5)  # the prompt, once per sequence (BOS in front, the last token fed with the drafts)
    assert set(calls[1:]) == {(2 * K, W + 1)}  # then only the windows of the K particles
    rounds = len(calls) - 1  # the slower sequence's
    assert 5 + K * (W + 1) <= out.stats["ar_tokens_per_sequence"] <= 5 + rounds * K * (W + 1)


def test_tokens_do_not_depend_on_the_batch_with_padded_prompts():
    # Prompts of different lengths are left-padded with the mask id (no tokenizer), an id the AR model lacks: the
    # cache hides it, and a sequence's tokens are those it gets alone.
    V = 40
    kw = dict(n=6, prompt=[[1, 2, 3], [4, 5], [6, 7, 8, 9, 10]], gen_length=20, sampler="speculative", particles=3,
              poe_weight=0.5, mask_id=V, verify_window=4, seed=2)
    models = (_bert_drafter(V + 1, V, positions=32), _gpt2(V, seed=5))
    whole = edlm_engine.sample(*models, **kw).tokens
    assert torch.equal(whole, edlm_engine.sample(*models, batch_size=1, **kw).tokens)
    assert torch.equal(whole, edlm_engine.sample(*models, batch_size=4, **kw).tokens)
    assert (whole[:, :5] == V).sum() == 2 * (2 + 3) and not (whole[:, 5:] == V).any()  # padding, then tokens


def test_the_energy_of_a_padded_row_is_that_of_the_row_alone(energy):
    x = torch.tensor([[7, 8, 9, 11, 12], [BOS, 8, 9, 11, 12]])  # the second row brings its own BOS
    log_q = torch.zeros(2, dtype=torch.float64)
    alone = energy(x, x, log_q)
    padded = torch.cat([torch.full((2, 3), 60), x], 1)  # 60: an id the model does not have
    seen = torch.cat([torch.zeros(2, 3, dtype=torch.bool), torch.ones(2, 5, dtype=torch.bool)], 1)
    assert torch.allclose(energy(padded, padded, log_q, attention=seen), alone, rtol=0, atol=1e-5)
    energy.positions, energy.mask_id = "masked", 3
    try:  # only masked positions are scored, and never the padding
        x_t = torch.where(torch.arange(8) >= 6, 3, padded)
        expected = energy(x, torch.where(torch.arange(5) >= 3, 3, x), log_q)
        assert torch.allclose(energy(padded, x_t, log_q, attention=seen), expected, rtol=0, atol=1e-5)
    finally:
        energy.positions, energy.mask_id = "all", None


def test_edlm_with_padded_prompts_hides_the_padding_from_the_energy():
    V = 40  # the padding is the mask id, which the AR model does not have
    kw = dict(n=4, prompt=[[1, 2, 3], [4, 5]], gen_length=8, steps=8, mask_id=V, seed=2, is_size=2)
    models = (_bert_drafter(V + 1, V, positions=32), _gpt2(V, seed=6))
    whole = edlm_engine.sample(*models, **kw)
    assert torch.equal(whole.tokens, edlm_engine.sample(*models, batch_size=1, **kw).tokens)
    assert whole.stats["energy_calls"] > 0 and (whole.tokens[1::2, 0] == V).all()


def test_without_bos_the_first_visible_token_is_context_padded_or_not():
    torch.manual_seed(7)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=30, n_embd=32, n_layer=1, n_head=2, n_positions=16)).eval()
    energy = edlm_engine.CausalLMEnergy(model)  # the config's BOS (50256) is not one of its 30 ids: no BOS
    assert energy.bos_id is None  # so the first visible token is context, never scored
    x = torch.tensor([[3, 4, 5, 6]])
    padded = torch.tensor([[29, 29, 3, 4, 5, 6]])
    seen = torch.tensor([[False, False, True, True, True, True]])
    assert torch.allclose(energy.log_prob(padded, attention=seen), energy.log_prob(x), rtol=0, atol=1e-5)


def test_attention_is_checked_and_named(energy):
    x = torch.tensor([[7, 8, 9]])
    for wrong in (torch.ones(1, 2, dtype=torch.bool), torch.ones(1, 3), [[True] * 3]):
        with pytest.raises(ValueError, match="attention must be a bool Tensor shaped like the tokens"):
            energy(x, x, torch.zeros(1, dtype=torch.float64), attention=wrong)
        with pytest.raises(ValueError, match="attention must be a bool Tensor"):
            energy.conditionals(x, 2, attention=wrong)
