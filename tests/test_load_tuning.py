"""load_model resolution (run folder, adapter, folder, hub offline) and exactly which parameters train."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM

import lmlab.models as zoo
from lmlab.errors import ConfigError, LmlabError
from lmlab.models.load import load_model
from lmlab.models.tuning import QLORA_NEEDS_CUDA, apply_tuning, describe_trainable
from lmlab.train.config import FreezeSettings, LoraSettings

IDS = torch.tensor([[5, 9, 17, 33, 8, 41]])


def names(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.fixture()
def qwen(tiny_qwen2_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir)


def save_rnn(path, tok_dir, arch="rnn"):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(0)
    model = zoo.build_model(f"{arch}:tiny", len(tok), overrides={"hidden_size": 32, "num_layers": 2},
                            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return model.eval()


# -- loading ------------------------------------------------------------------------------------

def test_folder_and_run_folder_resolve_to_the_same_weights(tiny_qwen2_dir, qwen, tmp_path):
    model, tok = load_model(str(tiny_qwen2_dir))
    assert type(model).__name__ == "Qwen2ForCausalLM" and not model.training
    assert tok.pad_token_id == 1
    run = tmp_path / "run"
    shutil.copytree(tiny_qwen2_dir, run / "final")
    (run / "result.json").write_text("{}")
    from_run, _ = load_model(str(run))
    with torch.no_grad():
        torch.testing.assert_close(from_run(IDS).logits, qwen(IDS).logits, rtol=0, atol=0)
        torch.testing.assert_close(model(IDS).logits, qwen(IDS).logits, rtol=0, atol=0)


def test_our_architectures_and_seq2seq_load_by_folder(tiny_tokenizer_dir, tmp_path):
    saved = save_rnn(tmp_path / "lstm", tiny_tokenizer_dir, "lstm")
    model, tok = load_model(str(tmp_path / "lstm"))
    assert type(model).__name__ == "LSTMForCausalLM"
    with torch.no_grad():
        torch.testing.assert_close(model(IDS).logits, saved(IDS).logits, rtol=0, atol=0)
    s2s = zoo.build_model("seq2seq:tiny", len(tok), overrides={"hidden_size": 32, "num_layers": 1, "heads": 2},
                          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    s2s.save_pretrained(tmp_path / "s2s")
    tok.save_pretrained(tmp_path / "s2s")
    loaded, _ = load_model(str(tmp_path / "s2s"))  # kind=causal-lm still gives the seq2seq model
    assert type(loaded).__name__ == "BartForConditionalGeneration"


def test_sequence_classification_scores_the_last_real_token(tiny_qwen2_dir):
    model, tok = load_model(str(tiny_qwen2_dir), kind="sequence-classification")
    assert type(model).__name__ == "Qwen2ForSequenceClassification"
    assert model.config.num_labels == 1 and model.config.pad_token_id == tok.pad_token_id
    batch = tok(["the cat ran", "a dog ran to the big house"], return_tensors="pt", padding=True)
    with torch.no_grad():
        padded = model(**batch).logits  # (B, 1)
        alone = model(**tok(["the cat ran"], return_tensors="pt")).logits
    assert padded.shape == (2, 1)
    torch.testing.assert_close(padded[0], alone[0], atol=1e-5, rtol=1e-5)


def test_adapter_folder_loads_base_plus_adapter(tiny_qwen2_dir, qwen, tmp_path):
    peft_model = apply_tuning(qwen, "lora", LoraSettings(rank=4, alpha=8, dropout=0.0), FreezeSettings())
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)  # B starts at zero; make the adapter matter
    peft_model.save_pretrained(tmp_path / "adapter")
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_qwen2_dir)
    loaded, tok = load_model(str(tmp_path / "adapter"))
    assert hasattr(loaded, "peft_config") and tok.pad_token_id == 1
    peft_model.eval()
    with torch.no_grad():
        want = peft_model(input_ids=IDS).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir)(IDS).logits
        torch.testing.assert_close(loaded(input_ids=IDS).logits, want, rtol=0, atol=1e-6)
    assert not torch.allclose(want, base, atol=1e-3)


def test_hub_id_offline_gives_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LmlabError, match=r"huggingface-cli download no-such-org/no-such-model --local-dir DIR.*HF_HOME"):
        load_model("no-such-org/no-such-model")


def test_bad_specs_explain_themselves(tmp_path):
    with pytest.raises(LmlabError, match=r"architecture without trained weights.*lmlab train pt model=rnn:tiny"):
        load_model("rnn:tiny")
    with pytest.raises(LmlabError, match="no such folder"):
        load_model(str(tmp_path / "nope" / "model"))
    (tmp_path / "quickstart").mkdir()
    with pytest.raises(LmlabError, match=r"no such folder; did you mean '.*/quickstart'"):
        load_model(str(tmp_path / "quickstrat"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(LmlabError, match=r"neither config\.json nor adapter_config\.json"):
        load_model(str(tmp_path / "empty"))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "result.json").write_text("{}")
    with pytest.raises(LmlabError, match="run folder without final/"):
        load_model(str(tmp_path / "run"))


# -- tuning -------------------------------------------------------------------------------------

def test_full_trains_everything(qwen):
    for p in qwen.parameters():
        p.requires_grad_(False)
    apply_tuning(qwen, "full")
    assert names(qwen) == {n for n, _ in qwen.named_parameters()}


def test_freeze_last_block_head_and_final_norm(qwen):
    apply_tuning(qwen, "freeze", freeze=FreezeSettings(trainable_layers=1))
    all_names = {n for n, _ in qwen.named_parameters()}
    # lm_head is tied to embed_tokens: training "the head" would train the first layer too, so by
    # default the tied tensor stays frozen
    want = {n for n in all_names if n.startswith("model.layers.1.")} | {"model.norm.weight"}
    assert names(qwen) == want
    first_layer = qwen.model.embed_tokens.weight
    assert qwen.lm_head.weight is first_layer and not first_layer.requires_grad


def test_freeze_trains_a_tied_head_only_when_asked(qwen):
    apply_tuning(qwen, "freeze", freeze=FreezeSettings(trainable_layers=1, train_tied_head=True))
    assert "model.embed_tokens.weight" in names(qwen) and qwen.lm_head.weight.requires_grad


def test_freeze_recurrent_model_last_layer(tiny_tokenizer_dir, tmp_path):
    model = save_rnn(tmp_path / "g", tiny_tokenizer_dir, "gru")
    apply_tuning(model, "freeze", freeze=FreezeSettings(trainable_layers=1))
    want = {"layers.1.weight_ih_l0", "layers.1.weight_hh_l0", "layers.1.bias_ih_l0", "layers.1.bias_hh_l0"}
    if not getattr(model.config, "tie_word_embeddings", False):
        want |= {"lm_head.weight"}
    assert names(model) == want


def test_freeze_patterns_and_bad_pattern(qwen):
    apply_tuning(qwen, "freeze", freeze=FreezeSettings(trainable=["model.layers.0.mlp.*"]))
    assert names(qwen) == {f"model.layers.0.mlp.{m}_proj.weight" for m in ("gate", "up", "down")}
    with pytest.raises(ConfigError, match=r"'model\.layer\.0\.mlp\.\*' matches no parameter; closest name: 'model\.layers\.0\.mlp"):
        apply_tuning(qwen, "freeze", freeze=FreezeSettings(trainable=["model.layer.0.mlp.*"]))


def test_lora_all_linear_and_named_targets(tiny_qwen2_dir):
    model = apply_tuning(AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir), "lora", LoraSettings(rank=4))
    trained = names(model)
    assert all(".lora_A." in n or ".lora_B." in n for n in trained)
    modules = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trained}
    assert modules == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert len(trained) == 2 * 7 * 2  # A and B × 7 linear layers × 2 blocks
    model = apply_tuning(AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir), "lora", LoraSettings(rank=4, targets=["q_proj", "v_proj"]))
    assert len(names(model)) == 2 * 2 * 2
    trainable, total = zoo.count_parameters(model)
    # per block: q (32→32) A 4×32 + B 32×4; v (32→16: 2 kv heads × 8) A 4×32 + B 16×4
    lora_params = 2 * ((4 * 32 + 32 * 4) + (4 * 32 + 16 * 4))
    assert trainable == lora_params
    assert describe_trainable(model).startswith(f"trainable {zoo.human(trainable)} / {zoo.human(total)} (")
    with pytest.raises(ConfigError, match="did you mean 'q_proj'"):
        apply_tuning(AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir), "lora", LoraSettings(targets=["q_prj"]))


def test_lora_on_a_classifier_keeps_the_head_trainable(tiny_qwen2_dir):
    model, _ = load_model(str(tiny_qwen2_dir), kind="sequence-classification")
    model = apply_tuning(model, "lora", LoraSettings(rank=2))
    trained = names(model)
    assert any(n.endswith("score.modules_to_save.default.weight") for n in trained)
    assert all("lora_" in n or "score" in n for n in trained)


def test_lora_on_our_rnn_adapts_its_linear_layers(tiny_tokenizer_dir, tmp_path):
    model = apply_tuning(save_rnn(tmp_path / "r", tiny_tokenizer_dir), "lora", LoraSettings(rank=2))
    modules = {n.split(".lora_")[0] for n in names(model)}
    assert modules == {f"base_model.model.layers.{i}.{m}" for i in (0, 1) for m in ("input", "recurrent")}


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU error only")
def test_qlora_on_cpu_is_refused_clearly(tiny_qwen2_dir, qwen):
    with pytest.raises(LmlabError, match="^" + QLORA_NEEDS_CUDA.replace("(", r"\(").replace(")", r"\)") + "$"):
        apply_tuning(qwen, "qlora")
    with pytest.raises(LmlabError, match="QLoRA needs a CUDA GPU"):
        load_model(str(tiny_qwen2_dir), tuning="qlora")
    with pytest.raises(ConfigError, match="did you mean 'lora'"):
        apply_tuning(qwen, "lroa")


@pytest.mark.parametrize("arch", ["rnn", "lstm"])
def test_our_recurrent_lm_loads_as_a_reward_model(arch, tiny_tokenizer_dir, tmp_path):
    causal = save_rnn(tmp_path / arch, tiny_tokenizer_dir, arch)
    model, tok = load_model(str(tmp_path / arch), kind="sequence-classification")
    assert type(model).__name__ == f"{arch.upper()}ForSequenceClassification"
    torch.testing.assert_close(model.embed_tokens.weight, causal.embed_tokens.weight, rtol=0, atol=0)
    batch = tok(["the cat ran", "a dog ran to the big house"], return_tensors="pt", padding=True)
    with torch.no_grad():
        scores = model(**batch).logits  # (B, 1): read at each row's last real token
        alone = model(**tok(["the cat ran"], return_tensors="pt")).logits
        hidden, _ = model.encode(batch["input_ids"][1:], None)
        out = model(**batch, labels=torch.tensor([0.5, -1.0]))
    assert scores.shape == (2, 1)
    torch.testing.assert_close(scores[0], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scores[1], model.score(hidden[0, -1]), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.loss, ((scores[:, 0] - torch.tensor([0.5, -1.0])) ** 2).mean())
    trained = names(apply_tuning(model, "freeze", freeze=FreezeSettings(trainable_layers=1)))
    assert "score.weight" in trained and "embed_tokens.weight" not in trained


def test_lora_on_an_lstm_explains_there_is_nothing_to_adapt(tiny_tokenizer_dir, tmp_path):
    with pytest.raises(ConfigError, match="no linear layers besides its output head"):
        apply_tuning(save_rnn(tmp_path / "l", tiny_tokenizer_dir, "lstm"), "lora", LoraSettings(rank=2))
