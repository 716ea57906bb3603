"""lmlab.train.sampler: the hand-written decode loop must give HF `generate`'s tokens (greedy, so every
step's logits are checked through their argmax on a random model whose logits are nearly flat), its
token picker must draw from HF's warped distribution, and it must stop and pad like generate."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from lmlab.train.sampler import decoder_of, generate_tokens, pick, sample_tokens


def _qwen2(vocab: int = 97, qk_norm: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    if qk_norm:
        from transformers import Qwen3Config, Qwen3ForCausalLM

        return Qwen3ForCausalLM(Qwen3Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                            max_position_embeddings=128)).eval()
    return Qwen2ForCausalLM(Qwen2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)).eval()


def _llama(vocab: int = 97) -> torch.nn.Module:
    torch.manual_seed(1)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                                        tie_word_embeddings=True, rope_theta=500.0)).eval()


def _prompts(vocab: int = 97) -> dict[str, torch.Tensor]:
    """Three left-padded prompts of lengths 7, 4 and 1."""
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, vocab, (3, 7), generator=g)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, :3] = 0
    mask[2, :6] = 0
    return {"input_ids": ids.masked_fill(mask == 0, 0), "attention_mask": mask}


@pytest.mark.parametrize("build", [_qwen2, _llama, lambda: _qwen2(qk_norm=True)], ids=["qwen2-gqa", "llama", "qwen3"])
def test_greedy_tokens_equal_hf_generate(build):
    model, enc = build(), _prompts()
    assert decoder_of(model) is model
    hf = model.generate(**enc, max_new_tokens=24, do_sample=False, eos_token_id=None, pad_token_id=0)[:, 7:]
    ours = sample_tokens(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=24, temperature=0.0)
    assert ours.shape == hf.shape == (3, 24)
    assert torch.equal(ours, hf)


def test_grouped_query_attention_without_sdpa_gqa_repeats_the_heads(monkeypatch):
    """torch < 2.5 has no `enable_gqa`: the loop repeats the k/v heads itself, same tokens."""
    from lmlab.train import sampler

    model, enc = _qwen2(), _prompts()
    hf = model.generate(**enc, max_new_tokens=16, do_sample=False, eos_token_id=None, pad_token_id=0)[:, 7:]
    monkeypatch.setattr(sampler, "_SDPA_GQA", False)
    ours = sample_tokens(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=16, temperature=0.0)
    assert torch.equal(ours, hf)


def test_n_samples_per_prompt_share_the_prompt_and_are_grouped():
    """n=2 greedy: each prompt's two rows are identical and equal its n=1 row (rows grouped by prompt)."""
    model, enc = _qwen2(), _prompts()
    one = sample_tokens(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=10, temperature=0.0)
    two = sample_tokens(model, enc["input_ids"], enc["attention_mask"], n=2, max_new_tokens=10, temperature=0.0)
    assert torch.equal(two[0::2], one) and torch.equal(two[1::2], one)


def test_stops_and_pads_like_generate():
    """Make the 3rd greedy token of row 0 the stop token: row 0 ends there, the rest of it is pad,
    the other rows run on, and HF generate with that eos agrees token for token."""
    model, enc = _qwen2(), _prompts()
    free = sample_tokens(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=12, temperature=0.0)
    stop = int(free[0, 2])
    ours = sample_tokens(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=12, temperature=0.0,
                         stop_ids=[stop], pad_id=0)
    hf = model.generate(**enc, max_new_tokens=12, do_sample=False, eos_token_id=[stop], pad_token_id=0)[:, 7:]
    first = int((free[0] == stop).nonzero()[0])
    assert int(ours[0, first]) == stop and (ours[0, first + 1:] == 0).all()
    assert torch.equal(ours, hf[:, :ours.size(1)])


def test_every_row_stopped_ends_the_loop_early():
    model, enc = _qwen2(), _prompts()
    free = sample_tokens(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=5, temperature=0.0)
    ours = sample_tokens(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=50, temperature=0.0,
                         stop_ids=free[:, 0].tolist(), pad_id=0)
    assert ours.size(1) == 1  # every row's first token is a stop token


def test_lora_adapters_are_applied():
    """Through PEFT: with a trained-looking adapter (B ≠ 0) the loop follows the adapted model, and
    with the adapter disabled it follows the base model: both equal HF generate."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_llama(), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    model.eval()
    enc = _prompts()
    inner = decoder_of(model)
    assert inner is not None
    for adapters in (True, False):
        ctx = model.disable_adapter() if not adapters else torch.enable_grad()
        with ctx:
            hf = model.generate(**enc, max_new_tokens=16, do_sample=False, eos_token_id=None, pad_token_id=0)[:, 7:]
            ours = sample_tokens(inner, enc["input_ids"], enc["attention_mask"], max_new_tokens=16, temperature=0.0)
        assert torch.equal(ours, hf), adapters
    base = sample_tokens(_llama(), enc["input_ids"], enc["attention_mask"], max_new_tokens=16, temperature=0.0)
    with model.disable_adapter():
        assert torch.equal(sample_tokens(inner, enc["input_ids"], enc["attention_mask"], max_new_tokens=16,
                                         temperature=0.0), base)


def test_models_the_loop_does_not_cover_fall_back_to_generate(tiny_tokenizer_dir):
    from lmlab.models import build_model

    lstm = build_model("lstm:tiny", 50, pad_token_id=0)
    assert decoder_of(lstm) is None
    cfg = Qwen2Config(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, use_sliding_window=True, sliding_window=4, max_window_layers=0)
    assert decoder_of(Qwen2ForCausalLM(cfg)) is None
    dropout = _qwen2()
    dropout.config.attention_dropout = 0.1
    assert decoder_of(dropout.train()) is None and decoder_of(dropout.eval()) is dropout
    zero3 = _qwen2()
    zero3.model.norm.weight.ds_id = 7  # what DeepSpeed ZeRO-3 marks its partitioned parameters with
    assert decoder_of(zero3) is None
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    enc = tok(["the cat"], return_tensors="pt")
    enc = {"input_ids": enc["input_ids"] % 50, "attention_mask": enc["attention_mask"]}
    out = generate_tokens(lstm.eval(), enc, {"max_new_tokens": 5, "do_sample": False, "pad_token_id": 0,
                                             "eos_token_id": None}, 1)
    assert out.shape == (1, enc["input_ids"].size(1) + 5)


@pytest.mark.parametrize("top_k,top_p", [(0, 1.0), (5, 1.0), (0, 0.7), (8, 0.9)])
def test_pick_draws_from_hf_warped_distribution(top_k, top_p):
    """The kept set equals HF's TopK/TopP warpers' and the draw frequencies match the warped
    softmax (total variation < 0.03 over 40,000 draws; a wrong temperature or mask gives > 0.1)."""
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    torch.manual_seed(0)
    logits = torch.randn(1, 20) * 2
    T = 0.8
    warped = TemperatureLogitsWarper(T)(None, logits.clone())
    if top_k:
        warped = TopKLogitsWarper(top_k)(None, warped)
    if top_p < 1:
        warped = TopPLogitsWarper(top_p)(None, warped)
    expected = warped.softmax(-1)[0]
    draws = pick(logits.expand(40_000, -1), T, top_k, top_p)
    freq = torch.bincount(draws, minlength=20).float() / draws.numel()
    assert set(freq.nonzero().flatten().tolist()) <= set(expected.nonzero().flatten().tolist())
    assert 0.5 * (freq - expected).abs().sum() < 0.03
    assert torch.equal(pick(logits, 0.0), logits.argmax(-1))


def test_rollout_sample_runs_the_loop_for_a_supported_model(tiny_qwen2_dir, monkeypatch):
    """`rollout.sample` goes through the loop for Qwen2 (HF generate is never called) and its
    greedy rows and masks equal those of the same call made through HF generate."""
    from transformers import AutoModelForCausalLM

    from lmlab.train import sampler
    from lmlab.train.rollout import Sampling, sample

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_qwen2_dir)
    texts = ["the cat sat on the mat and", "a dog"]
    greedy = Sampling(max_new_tokens=12, temperature=0.0)
    with monkeypatch.context() as m:
        m.setattr(sampler, "decoder_of", lambda model: None)  # force HF generate
        expected = sample(model, tok, texts, 1, greedy)
    calls = []
    monkeypatch.setattr(type(model), "generate", lambda self, **kw: calls.append(kw))
    got = sample(model, tok, texts, 1, greedy)
    assert not calls
    for key in ("input_ids", "attention_mask", "completion_mask", "ended"):
        assert torch.equal(got[key], expected[key]), key
