"""The model zoo: shapes, learning, save/load parity, cached == uncached decoding, padding, registry."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

import lmlab.models as zoo
from lmlab.errors import ConfigError

V = 40
SMALL = {"hidden_size": 32, "num_layers": 2}
CAUSAL = ["rnn", "lstm", "gru", "transformer"]
ALL = [*CAUSAL, "seq2seq"]


def tiny(arch: str, seed: int = 0, **extra):
    torch.manual_seed(seed)
    overrides = {**SMALL, **extra}
    if arch == "transformer":
        overrides.setdefault("num_heads", 4)
        overrides.setdefault("intermediate_size", 64)
    if arch == "seq2seq":
        overrides.setdefault("num_heads", 4)
        overrides.setdefault("ffn_size", 64)
    return zoo.build_model(f"{arch}:tiny", V, overrides=overrides, bos_token_id=0, eos_token_id=1, pad_token_id=2)


def forward(model, ids, **kw):
    if model.config.is_encoder_decoder:
        return model(input_ids=ids, decoder_input_ids=ids, **kw)
    return model(input_ids=ids, **kw)


@pytest.mark.parametrize("arch", ALL)
def test_forward_shapes_and_loss_is_mean_token_nll(arch):
    model = tiny(arch).eval()
    ids = torch.randint(3, V, (3, 9))
    out = forward(model, ids, labels=ids)
    assert out.logits.shape == (3, 9, V)  # (B, T, V)
    # HF causal loss shifts labels by one; seq2seq loss does not (decoder input is given separately)
    if model.config.is_encoder_decoder:
        logits, labels = out.logits, ids
    else:
        logits, labels = out.logits[:, :-1], ids[:, 1:]
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, V), labels.reshape(-1))
    assert torch.allclose(out.loss, expected, atol=1e-5)


@pytest.mark.parametrize("arch", ALL)
def test_a_repeated_sequence_is_learned(arch):
    """Plain Adam on one repeated sequence: the loss must fall to a small fraction of ln(V)."""
    model = tiny(arch, dropout=0.0).train()
    ids = torch.tensor([[3 + (i * 7) % 11 for i in range(16)]] * 4)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    losses = []
    for _ in range(40):
        loss = forward(model, ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 0.8 * torch.log(torch.tensor(float(V))).item()  # starts near uniform
    assert losses[-1] < 0.15 * losses[0], losses[::8]


def test_elman_rnn_matches_torch_rnn_with_the_same_weights():
    """Our recurrence h_t = tanh(W_x x_t + b + W_h h_{t-1}) is exactly nn.RNN(tanh) with b_hh = 0."""
    torch.manual_seed(0)
    layer = zoo.rnn.ElmanLayer(8)
    ref = torch.nn.RNN(8, 8, batch_first=True, nonlinearity="tanh")
    with torch.no_grad():
        ref.weight_ih_l0.copy_(layer.input.weight)
        ref.bias_ih_l0.copy_(layer.input.bias)
        ref.weight_hh_l0.copy_(layer.recurrent.weight)
        ref.bias_hh_l0.zero_()
    x = torch.randn(2, 5, 8)
    h0 = torch.randn(2, 1, 8)
    out, h = layer(x, h0, None)
    ref_out, ref_h = ref(x, h0.transpose(0, 1).contiguous())
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(h[:, 0], ref_h[0])


@pytest.mark.parametrize("arch", ALL)
def test_save_and_load_through_auto_classes_gives_identical_logits(arch, tmp_path):
    model = tiny(arch).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    auto = AutoModelForSeq2SeqLM if arch == "seq2seq" else AutoModelForCausalLM
    loaded = auto.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    ids = torch.randint(3, V, (2, 6))
    torch.testing.assert_close(forward(loaded, ids).logits, forward(model, ids).logits, rtol=0, atol=0)
    # tied head survives the round trip as one tensor
    assert loaded.get_output_embeddings().weight.data_ptr() == loaded.get_input_embeddings().weight.data_ptr()


def test_transformer_is_a_plain_llama_checkpoint(tmp_path):
    """No lmlab code is needed to read it: config.json says llama and LlamaForCausalLM loads it."""
    from transformers import LlamaForCausalLM

    model = tiny("transformer").eval()
    model.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "llama"
    loaded = LlamaForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(3, V, (1, 5))
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)


@pytest.mark.parametrize("arch", CAUSAL)
def test_cached_last_position_equals_full_recomputation(arch):
    model = tiny(arch).eval()
    ids = torch.randint(3, V, (2, 8))
    with torch.no_grad():
        full = model(input_ids=ids).logits[:, -1]
        prefix = model(input_ids=ids[:, :-1], use_cache=True)
        step = model(input_ids=ids[:, -1:], cache=prefix.cache, use_cache=True).logits[:, -1]
    torch.testing.assert_close(step, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["rnn", "lstm", "gru"])
def test_recurrent_cache_is_incremental_not_recomputed(arch):
    """A cached step runs on one token: its state changes if the cache changes, not the prompt."""
    model = tiny(arch).eval()
    ids = torch.randint(3, V, (1, 6))
    with torch.no_grad():
        a = model(input_ids=ids, use_cache=True).cache
        b = model(input_ids=ids.flip(1), use_cache=True).cache
        la = model(input_ids=ids[:, -1:], cache=a).logits
        lb = model(input_ids=ids[:, -1:], cache=b).logits
    assert a.get_seq_length() == 6
    assert not torch.allclose(la, lb)


@pytest.mark.parametrize("arch", CAUSAL)
def test_left_padding_gives_the_unpadded_result(arch):
    model = tiny(arch).eval()
    short = torch.randint(3, V, (1, 4))
    long = torch.randint(3, V, (1, 7))
    batch = torch.cat([torch.cat([torch.full((1, 3), 2), short], 1), long])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [1] * 7])
    with torch.no_grad():
        padded = model(input_ids=batch, attention_mask=mask).logits[:, -1]
        alone = torch.cat([model(input_ids=short).logits[:, -1], model(input_ids=long).logits[:, -1]])
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ALL)
def test_greedy_generate_with_and_without_cache_agree(arch):
    model = tiny(arch).eval()
    ids = torch.randint(3, V, (2, 5))
    kw = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": 2, "eos_token_id": None}
    a = model.generate(ids, use_cache=True, **kw)
    b = model.generate(ids, use_cache=False, **kw)
    assert a.tolist() == b.tolist()
    assert a.shape[1] == (9 if arch == "seq2seq" else 13)


def test_registry_errors_name_the_closest_valid_choice():
    with pytest.raises(ConfigError, match="did you mean 'transformer'"):
        zoo.build_model("trasformer", V)
    with pytest.raises(ConfigError, match="did you mean 'rnn:small'"):
        zoo.build_model("rnn:smal", V)
    with pytest.raises(ConfigError, match="unknown architecture key 'hiden_size'; did you mean 'hidden_size'"):
        zoo.build_model("lstm:tiny", V, overrides={"hiden_size": 32})
    with pytest.raises(ConfigError, match="transformer:tiny"):  # 30 is not divisible by 4 heads
        zoo.build_model("transformer:tiny", V, overrides={"hidden_size": 30})


def test_is_architecture():
    assert zoo.is_architecture("rnn") and zoo.is_architecture("transformer:tiny")
    assert zoo.is_architecture("Seq2Seq:base")
    assert not zoo.is_architecture("Qwen/Qwen2.5-0.5B")
    assert not zoo.is_architecture("gpt2")
    assert not zoo.is_architecture("runs/quickstart/pt")


def test_aliases_and_presets():
    model = zoo.build_model("seq2seq:tiny", V, overrides={"num_layers": 1, "hidden_size": 32, "heads": 2})
    assert (model.config.encoder_layers, model.config.decoder_layers, model.config.d_model) == (1, 1, 32)
    assert model.config.forced_eos_token_id is None
    rows = {r["model"]: r["params"] for r in zoo.preset_table(vocab_size=32000)}
    for arch in ALL:
        sizes = [rows[f"{arch}:{s}"] for s in ("tiny", "small", "base", "medium")]
        assert sizes == sorted(sizes)
    small_vocab = {r["model"]: r["params"] for r in zoo.preset_table(vocab_size=8192)}
    assert all(0.5e6 < small_vocab[f"{arch}:tiny"] < 1e6 for arch in ALL)
    assert 100e6 < rows["transformer:medium"] < 150e6


def test_count_parameters_counts_tied_weights_once():
    model = tiny("rnn")
    trainable, total = zoo.count_parameters(model)
    h = 32
    expected = V * h + 2 * (h * h + h + h * h)  # embedding (= tied head) + 2 Elman layers
    assert total == expected == trainable
    model.embed_tokens.weight.requires_grad_(False)
    assert zoo.count_parameters(model) == (expected - V * h, expected)


@pytest.mark.parametrize("arch", ["rnn", "lstm", "gru"])
def test_packed_examples_do_not_leak_state(arch):
    """A row packing [a | b | pad] with position_ids restarts gives each example's own logits."""
    model = tiny(arch).eval()
    a, b = torch.randint(3, V, (1, 5)), torch.randint(3, V, (1, 3))
    row = torch.cat([a, b, torch.full((1, 2), 2)], 1)
    other = torch.randint(3, V, (1, 10))  # a second row holding a single example
    pos = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 0, 1], list(range(10))])
    with torch.no_grad():
        packed = model(input_ids=torch.cat([row, other]), position_ids=pos).logits
        torch.testing.assert_close(packed[0, :5], model(input_ids=a).logits[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(packed[0, 5:8], model(input_ids=b).logits[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(packed[1], model(input_ids=other).logits[0], atol=1e-5, rtol=1e-5)
        leaky = model(input_ids=row).logits
    assert not torch.allclose(leaky[0, 5:8], packed[0, 5:8], atol=1e-4)
