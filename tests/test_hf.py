"""The engine with small randomly initialized HuggingFace models, saved and loaded back by path."""

import pytest
import torch
import transformers
from transformers import (AutoConfig, AutoModelForMaskedLM, BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel,
                          PretrainedConfig, PreTrainedModel)
from transformers.modeling_outputs import MaskedLMOutput

import edlm_engine

VOCAB, MASK = 64, 3


def _tiny_config(model_type):
    """A config class of its own per tiny model type: transformers 5 reads a config's fields from its concrete
    class, so each class defines its __init__ (a shared base class fails with "no attribute vocab_size")."""

    class TinyConfig(PretrainedConfig):
        def __init__(self, vocab_size=40, hidden_size=16, model_length=24, mask_token_id=39, **kwargs):
            self.vocab_size = vocab_size
            self.hidden_size = hidden_size
            self.model_length = model_length
            self.mask_token_id = mask_token_id
            super().__init__(**kwargs)

    TinyConfig.model_type = model_type
    return TinyConfig


TinyMDLMConfig = _tiny_config("edlm-test-tiny-mdlm")
TinyLLaDAConfig = _tiny_config("edlm-test-tiny-llada")


class TinyMDLM(PreTrainedModel):
    """MDLM-shaped: the forward takes ``timesteps`` (sigma) and conditions on it."""

    config_class = TinyMDLMConfig

    def __init__(self, config):
        super().__init__(config)
        self.embed = torch.nn.Embedding(config.vocab_size, config.hidden_size)
        self.time = torch.nn.Linear(1, config.hidden_size)
        self.out = torch.nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def forward(self, input_ids, timesteps, **kwargs):
        self.seen_timesteps = timesteps
        h = self.embed(input_ids) + self.time(timesteps.float()[:, None, None].expand(*input_ids.shape, 1))
        return MaskedLMOutput(logits=self.out(torch.tanh(h)))


class TinyLLaDA(PreTrainedModel):
    """LLaDA-shaped: registered with AutoModel only, no time input, returns an output with logits."""

    config_class = TinyLLaDAConfig

    def __init__(self, config):
        super().__init__(config)
        self.embed = torch.nn.Embedding(config.vocab_size, config.hidden_size)
        self.out = torch.nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def forward(self, input_ids, **kwargs):
        return MaskedLMOutput(logits=self.out(torch.tanh(self.embed(input_ids))))


AutoConfig.register(TinyMDLMConfig.model_type, TinyMDLMConfig)
AutoModelForMaskedLM.register(TinyMDLMConfig, TinyMDLM)
AutoConfig.register(TinyLLaDAConfig.model_type, TinyLLaDAConfig)
transformers.AutoModel.register(TinyLLaDAConfig, TinyLLaDA)


def _word_tokenizer(words):
    """A real fast tokenizer over a word list, with [MASK] at id 3, built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", mask_token="[MASK]",
                                                pad_token="[PAD]", cls_token="[CLS]")


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("hf")
    bert = BertForMaskedLM(BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=64, max_position_embeddings=32))
    bert.save_pretrained(root / "bert")
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=1, n_head=2, n_positions=40, bos_token_id=0,
                                      eos_token_id=0))
    gpt2.save_pretrained(root / "gpt2")
    small = GPT2LMHeadModel(GPT2Config(vocab_size=32, n_embd=16, n_layer=1, n_head=2, n_positions=40))
    small.save_pretrained(root / "gpt2-small-vocab")
    TinyMDLM(TinyMDLMConfig()).save_pretrained(root / "mdlm")
    TinyLLaDA(TinyLLaDAConfig()).save_pretrained(root / "llada")
    words = ["[PAD]", "[UNK]", "[CLS]", "[MASK]"] + [f"w{i}" for i in range(VOCAB - 4)]
    bert.save_pretrained(root / "bert-tok")
    _word_tokenizer(words).save_pretrained(root / "bert-tok")
    return {k: str(root / k) for k in ("bert", "gpt2", "gpt2-small-vocab", "mdlm", "llada", "bert-tok")}


def test_bert_denoiser_with_gpt2_energy_by_path(paths):
    kw = dict(n=4, seq_len=16, steps=8, is_size=3, is_window=(0.0, 1.0), mask_id=MASK, seed=5)
    out = edlm_engine.sample(paths["bert"], paths["gpt2"], **kw)
    assert out.tokens.shape == (4, 16) and out.tokens.dtype == torch.int64
    assert not (out.tokens == MASK).any()
    st = out.stats
    assert st["energy_calls"] >= 1 and 3 * 4 <= st["candidates_scored"] <= 3 * 4 * st["energy_calls"]
    assert st["denoiser_calls"] >= 1 and st["seconds"] > 0 and st["tokens_per_second"] > 0
    assert 1.0 <= st["mean_ess"] <= 3.0
    again = edlm_engine.sample(paths["bert"], paths["gpt2"], **kw)
    assert torch.equal(out.tokens, again.tokens)
    split = edlm_engine.sample(paths["bert"], paths["gpt2"], batch_size=1, **kw)
    assert torch.equal(out.tokens, split.tokens)
    masked_only = edlm_engine.sample(paths["bert"], paths["gpt2"], energy_positions="masked", **kw)
    assert masked_only.tokens.shape == (4, 16)


def test_causal_lm_energy_is_minus_log_p_plus_log_q(paths):
    energy = edlm_engine.CausalLMEnergy(paths["gpt2"])
    assert energy.bos_id == 0
    x0 = torch.randint(1, VOCAB, (5, 12))
    log_q = torch.randn(5, dtype=torch.float64)
    E = energy(x0, torch.full_like(x0, MASK), log_q)
    model = GPT2LMHeadModel.from_pretrained(paths["gpt2"]).eval()
    with torch.no_grad():
        logits = model(torch.cat([torch.zeros(5, 1, dtype=torch.long), x0], 1)).logits[:, :-1]
    log_p = torch.log_softmax(logits.double(), -1).gather(-1, x0[..., None]).squeeze(-1).sum(1)
    assert torch.allclose(E, -log_p + log_q, rtol=1e-5)


def test_mdlm_style_model_gets_sigma(paths):
    model = AutoModelForMaskedLM.from_pretrained(paths["mdlm"])
    out = edlm_engine.sample(model, n=3, steps=6, seed=0)  # seq_len from config.model_length, mask from config
    assert out.tokens.shape == (3, 24)
    assert not (out.tokens == 39).any()
    assert out.stats["denoiser_calls"] == 6  # time-conditioned: no caching
    sigma = edlm_engine.LogLinearSchedule().sigma(torch.tensor(1 / 6, dtype=torch.float64))
    assert torch.allclose(model.seen_timesteps.double(), sigma.expand(3), rtol=1e-6)
    by_path = edlm_engine.sample(paths["mdlm"], n=3, steps=6, seed=0)
    assert torch.equal(out.tokens, by_path.tokens)


def test_llada_like_model_through_auto_model(paths):
    out = edlm_engine.sample(paths["llada"], n=2, steps=4, seed=0)
    assert out.tokens.shape == (2, 24) and not (out.tokens == 39).any()
    assert out.stats["denoiser_calls"] <= 4


def test_tokenizer_gives_mask_id_and_text(paths):
    out = edlm_engine.sample(paths["bert-tok"], n=2, seq_len=6, steps=3, seed=0, prefix=[5, 6])
    assert not (out.tokens == 3).any()
    assert len(out.text) == 2 and out.text[0].split()[:2] == ["w1", "w2"]


def test_first_hitting_and_ancestral_with_bert(paths):
    for sampler in ("ancestral", "first_hitting"):
        out = edlm_engine.sample(paths["bert"], n=2, seq_len=10, steps=5, sampler=sampler, mask_id=MASK, seed=1,
                                 prefix=[7, 8], template=None)
        assert out.tokens.shape == (2, 10) and not (out.tokens == MASK).any()
        assert out.tokens[:, :2].tolist() == [[7, 8], [7, 8]]
    fh = edlm_engine.sample(paths["bert"], n=2, seq_len=10, sampler="first_hitting", mask_id=MASK, seed=1)
    assert fh.stats["denoiser_calls"] == 10


def test_hf_bad_inputs_are_clear(paths):
    with pytest.raises(ValueError, match="no mask id known"):
        edlm_engine.sample(paths["bert"], n=1, seq_len=8, steps=2)
    with pytest.raises(ValueError, match="exceeds the denoiser's 32 positions"):
        edlm_engine.sample(paths["bert"], n=1, seq_len=33, steps=2, mask_id=MASK)
    with pytest.raises(ValueError, match="energy vocabulary"):
        edlm_engine.sample(paths["bert"], paths["gpt2-small-vocab"], n=1, seq_len=8, steps=2, mask_id=MASK)
    with pytest.raises(ValueError, match="energy model's 40 positions"):
        edlm_engine.sample(TinyMDLM(TinyMDLMConfig(model_length=64)), paths["gpt2"], n=1, seq_len=40, steps=2)
    with pytest.raises(ValueError, match="first_hitting"):
        edlm_engine.sample(paths["bert"], paths["gpt2"], n=1, seq_len=8, sampler="first_hitting", mask_id=MASK)
    with pytest.raises(OSError):
        edlm_engine.sample("/nonexistent/model/path", n=1, seq_len=8)


# ---------------------------------------------------------------- what a new user hit (the SampleConfig issue)


@pytest.fixture(scope="module")
def more_paths(tmp_path_factory):
    from transformers import Qwen2Config, Qwen2ForCausalLM, RobertaConfig, RobertaForMaskedLM, XLMRobertaConfig, \
        XLMRobertaForMaskedLM

    torch.manual_seed(1)
    root = tmp_path_factory.mktemp("hf-more")
    small = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    RobertaForMaskedLM(RobertaConfig(max_position_embeddings=34, **small)).save_pretrained(root / "roberta")
    XLMRobertaForMaskedLM(XLMRobertaConfig(max_position_embeddings=34, **small)).save_pretrained(root / "xlmr")
    bidir = Qwen2Config(num_key_value_heads=2, max_position_embeddings=64, **small)
    bidir.is_causal = False
    Qwen2ForCausalLM(bidir).save_pretrained(root / "qwen2-bidirectional")
    Qwen2ForCausalLM(Qwen2Config(num_key_value_heads=2, max_position_embeddings=64, **small)).save_pretrained(
        root / "qwen2-causal")
    words = ["[PAD]", "[UNK]", "[CLS]", "[MASK]"] + [f"w{i}" for i in range(VOCAB - 4)]
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=1, n_head=2, n_positions=40,
                                      bos_token_id=0, eos_token_id=0))
    for name, vocab in (("gpt2-same-tok", words), ("gpt2-other-tok", words[:4] + words[4:][::-1])):
        gpt2.save_pretrained(root / name)
        _word_tokenizer(vocab).save_pretrained(root / name)
    BertForMaskedLM(BertConfig(max_position_embeddings=32, **small)).save_pretrained(root / "bert-broken-tok")
    (root / "bert-broken-tok" / "tokenizer_config.json").write_text("{ not json")
    return {p.name: str(p) for p in root.iterdir()}


def test_ar_log_probability_of_a_row_does_not_depend_on_its_batch(paths):
    energy = edlm_engine.CausalLMEnergy(paths["gpt2"])  # BOS id 0
    x = torch.randint(1, VOCAB, (4, 10))
    x[1, 0] = x[3, 0] = 0  # two rows already start with BOS
    together = energy.log_prob(x)
    alone = torch.cat([energy.log_prob(x[i : i + 1]) for i in range(4)])
    assert torch.allclose(together, alone, rtol=1e-6, atol=1e-9)
    model = GPT2LMHeadModel.from_pretrained(paths["gpt2"]).eval()
    with torch.no_grad():  # a row that starts with BOS: its first token is the context, the rest is scored
        logits = model(x[1:2]).logits[:, :-1]
    direct = torch.log_softmax(logits.double(), -1).gather(-1, x[1:2, 1:, None]).sum()
    assert torch.allclose(together[1], direct, rtol=1e-5)
    weights = torch.rand(4, 10) > 0.5
    assert torch.allclose(energy.log_prob(x, weights),
                          torch.cat([energy.log_prob(x[i : i + 1], weights[i : i + 1]) for i in range(4)]), rtol=1e-6)
    assert not energy.log_prob(x).requires_grad
    no_bos = edlm_engine.CausalLMEnergy(paths["gpt2-small-vocab"])  # its BOS id 50256 lies outside its 32 tokens
    assert no_bos.bos_id is None
    y = torch.randint(0, 32, (4, 10))
    assert torch.allclose(no_bos.log_prob(y), torch.cat([no_bos.log_prob(y[i : i + 1]) for i in range(4)]), rtol=1e-6)


def test_samples_with_bos_rows_do_not_depend_on_the_batch_size(paths):
    template = [[0] + [MASK] * 9, [MASK] * 10, [0] + [MASK] * 9]
    kw = dict(n=3, template=template, steps=4, is_size=3, is_window=(0.0, 1.0), mask_id=MASK, seed=2)
    whole = edlm_engine.sample(paths["bert"], paths["gpt2"], **kw)
    split = edlm_engine.sample(paths["bert"], paths["gpt2"], batch_size=1, **kw)
    assert torch.equal(whole.tokens, split.tokens)


def test_energy_with_another_token_to_id_map_is_refused(paths, more_paths):
    kw = dict(n=2, seq_len=6, steps=2, seed=0)
    with pytest.raises(ValueError, match="does not map tokens to the ids"):
        edlm_engine.sample(paths["bert-tok"], more_paths["gpt2-other-tok"], **kw)
    out = edlm_engine.sample(paths["bert-tok"], more_paths["gpt2-other-tok"], allow_vocab_mismatch=True, **kw)
    assert out.tokens.shape == (2, 6)
    assert edlm_engine.sample(paths["bert-tok"], more_paths["gpt2-same-tok"], **kw).tokens.shape == (2, 6)


@pytest.mark.parametrize("name", ["roberta", "xlmr"])
def test_roberta_style_position_limit(more_paths, name):
    out = edlm_engine.sample(more_paths[name], n=1, steps=2, mask_id=MASK, seed=0)  # default seq_len
    assert out.tokens.shape == (1, 32)  # max_position_embeddings 34 - padding_idx 1 - 1
    with pytest.raises(ValueError, match="seq_len 33 exceeds"):
        edlm_engine.sample(more_paths[name], n=1, seq_len=33, steps=2, mask_id=MASK)


def test_bidirectional_causal_lm_checkpoint_loads_with_its_head(more_paths):
    denoiser = edlm_engine.as_denoiser(more_paths["qwen2-bidirectional"], mask_id=MASK)
    x = torch.randint(4, VOCAB, (1, 8))
    y = x.clone()
    y[0, -1] = (y[0, -1] + 1) % VOCAB
    t = torch.ones(1, dtype=torch.float64)
    assert denoiser(x, t).shape == (1, 8, VOCAB)
    assert not torch.allclose(denoiser(x, t)[0, 0], denoiser(y, t)[0, 0])  # the first position sees the last
    out = edlm_engine.sample(more_paths["qwen2-bidirectional"], n=2, seq_len=8, steps=3, mask_id=MASK, seed=0)
    assert not (out.tokens == MASK).any()
    with pytest.raises(ValueError, match="is a causal LM"):
        edlm_engine.sample(more_paths["qwen2-causal"], n=1, seq_len=8, steps=2, mask_id=MASK)


def test_a_users_own_energy_keeps_its_positions(paths):
    energy = edlm_engine.CausalLMEnergy(paths["gpt2"], positions="masked")
    edlm_engine.sample(paths["bert"], energy, n=1, seq_len=6, steps=2, mask_id=MASK)
    assert energy.positions == "masked"
    edlm_engine.sample(paths["bert"], energy, n=1, seq_len=6, steps=2, mask_id=MASK, energy_positions="all")
    assert energy.positions == "all"


def test_out_of_range_ids_name_the_argument(paths):
    kw = dict(n=1, seq_len=6, steps=2)
    with pytest.raises(ValueError, match="mask_id 64 is outside"):
        edlm_engine.sample(paths["bert"], mask_id=VOCAB, **kw)
    with pytest.raises(ValueError, match="prefix holds token id 70"):
        edlm_engine.sample(paths["bert"], mask_id=MASK, prefix=[1, 70], **kw)
    with pytest.raises(ValueError, match="template holds token id 99"):
        edlm_engine.sample(paths["bert"], mask_id=MASK, n=1, steps=2, template=[MASK, 99, MASK])


def test_a_tokenizer_that_fails_to_load_is_a_warning_naming_the_error(more_paths):
    with pytest.warns(UserWarning, match="tokenizer of .* did not load"):
        out = edlm_engine.sample(more_paths["bert-broken-tok"], n=1, seq_len=4, steps=2, mask_id=MASK)
    assert out.text is None


def test_linear_schedule_and_a_time_conditioned_model(paths):
    with pytest.raises(ValueError, match="schedule='linear' has sigma"):
        edlm_engine.sample(paths["mdlm"], n=1, steps=2, schedule="linear")
    out = edlm_engine.sample(paths["llada"], n=1, steps=2, schedule="linear")  # time-agnostic: fine
    assert not (out.tokens == 39).any()


def test_numpy_integers_and_load_time_apart(paths):
    import numpy as np

    out = edlm_engine.sample(paths["bert"], n=np.int64(2), seq_len=np.int32(6), steps=np.int64(3),
                             mask_id=np.int64(MASK), seed=np.uint8(1))
    assert out.tokens.shape == (2, 6)
    assert out.stats["load_seconds"] > 0 and out.stats["seconds"] > 0
    assert out.stats["tokens_per_second"] == pytest.approx(12 / out.stats["seconds"])


def test_a_mistyped_relative_path_fails_at_once(tmp_path, monkeypatch):
    import time

    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    t0 = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="no such file"):
        edlm_engine.sample("models/bert-tiny", n=1, seq_len=4)
    assert time.perf_counter() - t0 < 5


# ---------------------------------------------------------------- instruct models (LLaDA / Dream conventions)

TinyLLaDAFamilyConfig = _tiny_config("llada")  # LLaDA checkpoints do not name their mask id: 126336 is known
TinyDreamConfig = _tiny_config("dream")


class TinyLLaDAFamily(TinyLLaDA):
    config_class = TinyLLaDAFamilyConfig


class TinyDream(TinyLLaDA):
    """Dream-shaped: output i predicts position i + 1 (a bidirectional model trained with a shift)."""

    config_class = TinyDreamConfig

    def forward(self, input_ids, attention_mask=None, **kwargs):
        self.seen_attention_mask = attention_mask
        logits = self.out(torch.tanh(self.embed(input_ids)))
        return MaskedLMOutput(logits=torch.cat([logits[:, 1:], logits[:, :1]], 1))


AutoConfig.register("llada", TinyLLaDAFamilyConfig)
transformers.AutoModel.register(TinyLLaDAFamilyConfig, TinyLLaDAFamily)
AutoConfig.register("dream", TinyDreamConfig)
transformers.AutoModel.register(TinyDreamConfig, TinyDream)


@pytest.fixture(scope="module")
def instruct_paths(tmp_path_factory):
    torch.manual_seed(2)
    root = tmp_path_factory.mktemp("hf-instruct")
    llada = TinyLLaDAFamilyConfig(vocab_size=126464, hidden_size=4, model_length=64)
    del llada.mask_token_id
    TinyLLaDAFamily(llada).save_pretrained(root / "llada")
    TinyDream(TinyDreamConfig(vocab_size=VOCAB, mask_token_id=MASK)).save_pretrained(root / "dream")
    BertForMaskedLM(BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=32)).save_pretrained(root / "chat")
    words = ["[PAD]", "[UNK]", "[CLS]", "[MASK]", "[EOS]"] + [f"w{i}" for i in range(VOCAB - 5)]
    tok = _word_tokenizer(words)
    tok.eos_token = "[EOS]"
    tok.chat_template = ("{% for m in messages %}[CLS] {{ m['content'] }}{% endfor %}"
                         "{% if add_generation_prompt %} w0{% endif %}")
    tok.save_pretrained(root / "chat")
    return {p.name: str(p) for p in root.iterdir()}


def test_llada_family_checkpoint_gets_its_known_mask_id(instruct_paths):
    out = edlm_engine.sample(instruct_paths["llada"], n=1, prompt=[5, 6], gen_length=4, steps=4,
                             unmasking="confidence", seed=0)
    assert out.tokens.shape == (1, 6) and not (out.tokens == 126336).any()


def test_dream_family_output_is_read_shifted(instruct_paths):
    model = transformers.AutoModel.from_pretrained(instruct_paths["dream"])
    denoiser = edlm_engine.as_denoiser(model)
    assert denoiser.shifted and denoiser.mask_id == MASK
    kw = dict(n=3, prompt=[[5, 6, 7], [8]], gen_length=6, block_length=3, steps=4, unmasking="entropy", seed=1)
    out = edlm_engine.sample(model, **kw)
    assert model.seen_attention_mask is not None and model.seen_attention_mask[1, :2].tolist() == [0, 0]
    unshifted = TinyLLaDA(TinyLLaDAConfig(vocab_size=VOCAB, mask_token_id=MASK))
    unshifted.load_state_dict(model.state_dict())
    assert torch.equal(out.tokens, edlm_engine.sample(unshifted, **kw).tokens)


def test_text_prompts_with_a_chat_template_give_the_generation_as_text(instruct_paths):
    out = edlm_engine.sample(instruct_paths["chat"], n=2, prompt=["w5 w6", "w7"], chat_template=True, gen_length=8,
                             block_length=4, steps=8, unmasking="confidence", mask_id=MASK, seed=2)
    # [CLS] w5 w6 w0 | [PAD] [CLS] w7 w0, then 8 generated tokens
    assert out.tokens[0, :4].tolist() == [2, 10, 11, 5] and out.tokens[1, :4].tolist() == [0, 2, 12, 5]
    assert out.tokens.shape == (2, 12) and not (out.tokens == MASK).any()
    for i in range(2):
        gen = out.tokens[i, 4:]
        if (gen == 4).any():  # the tokenizer's EOS: everything after it is EOS too
            first = int((gen == 4).nonzero()[0])
            assert (gen[first:] == 4).all()
        words = out.text[i].split()
        assert all(w.startswith("w") for w in words) and len(words) <= 8  # generation only, specials stripped


def test_causal_lm_conditionals_and_speculative_decoding_by_path(paths):
    energy = edlm_engine.CausalLMEnergy(paths["gpt2"])
    x = torch.randint(1, VOCAB, (3, 7))
    x[1, 0] = 0  # starts with BOS: position 0 is given
    lp = energy.log_probs(x)
    assert lp.shape == (3, 7, VOCAB) and torch.allclose(lp.exp().sum(-1), torch.ones(3, 7, dtype=torch.float64))
    gathered = lp.gather(-1, x[..., None]).squeeze(-1)
    assert torch.allclose(gathered[1, 0], torch.tensor(0.0, dtype=torch.float64))
    assert torch.allclose(gathered.sum(1), energy.log_prob(x), rtol=1e-5)
    pos = torch.tensor([[0, 3, 6], [0, 1, 5], [2, 2, 4]])  # the head runs on these hidden states alone
    assert torch.allclose(energy.log_probs(x, pos), lp[torch.arange(3)[:, None], pos], atol=1e-6)
    out = edlm_engine.sample(paths["bert"], paths["gpt2"], n=3, seq_len=10, sampler="speculative", mask_id=MASK,
                             verify_window=4, seed=1)
    assert out.tokens.shape == (3, 10) and not (out.tokens == MASK).any()
    assert out.stats["denoiser_calls_per_sequence"] <= 10
