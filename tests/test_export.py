"""export: a LoRA model merged into standalone weights gives the adapter model's logits."""
from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import lmlab.models as zoo
from lmlab.models.export import export
from lmlab.models.tuning import apply_tuning
from lmlab.train.config import LoraSettings

IDS = torch.tensor([[5, 9, 17, 33, 8, 41], [7, 7, 2, 19, 60, 3]])


def adapter_dir(base_dir, tmp_path):
    model = apply_tuning(AutoModelForCausalLM.from_pretrained(base_dir), "lora", LoraSettings(rank=4, alpha=16, dropout=0.0))
    torch.manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)  # B starts at zero: make the update non-trivial
    model.save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter", model.eval()


def test_merged_lora_export_equals_the_adapter_model(tiny_qwen2_dir, tmp_path):
    folder, peft_model = adapter_dir(tiny_qwen2_dir, tmp_path)
    out = export(folder, tmp_path / "merged")
    files = {p.name for p in out.iterdir()}
    assert "adapter_config.json" not in files and "model.safetensors" in files and "tokenizer.json" in files
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(merged).__name__ == "Qwen2ForCausalLM"
    assert not any("lora" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        want = peft_model(input_ids=IDS).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir)(IDS).logits
        torch.testing.assert_close(merged(IDS).logits, want, atol=1e-5, rtol=0)
    assert (want - base).abs().max() > 1e-2  # the adapter really changed the model
    assert AutoTokenizer.from_pretrained(out).pad_token_id == 1


def test_unmerged_export_keeps_the_adapter(tiny_qwen2_dir, tmp_path):
    folder, _ = adapter_dir(tiny_qwen2_dir, tmp_path)
    out = export(folder, tmp_path / "adapter-only", merge_lora=False)
    assert (out / "adapter_config.json").exists() and not (out / "model.safetensors").exists()


def test_export_command_on_our_rnn(tiny_tokenizer_dir, tmp_path):
    from lmlab.cli import main

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    torch.manual_seed(0)
    model = zoo.build_model("gru:tiny", len(tok), overrides={"hidden_size": 32}, eos_token_id=tok.eos_token_id).eval()
    run = tmp_path / "run"
    model.save_pretrained(run / "final")
    tok.save_pretrained(run / "final")
    (run / "result.json").write_text("{}")
    assert main(["export", str(run), f"out={tmp_path / 'exported'}"]) == 0
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "exported").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(IDS).logits, model(IDS).logits, rtol=0, atol=0)
