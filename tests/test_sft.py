"""The SFT stage on the tiny Qwen2 fixture: tuning methods, LoRA reload, resume, packing, learning."""
from __future__ import annotations

import json

import pytest
import torch

from lmlab.runs import read_jsonl
from lmlab.train.config import SFTConfig
from lmlab.train.trainer import Callback, extra_callbacks

CHATS = [
    ("the cat ran", "tom found a red ball"),
    ("the dog said", "mia went to the park"),
    ("a big tree", "the sun and the rain"),
    ("he played with", "a small blue house"),
    ("she saw the river", "then the boy was happy"),
    ("the girl lost", "her friend found it"),
]


@pytest.fixture()
def chat_file(tmp_path):
    path = tmp_path / "chats.jsonl"
    rows = [{"messages": [{"role": "user", "content": u}, {"role": "assistant", "content": a}]} for u, a in CHATS]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cfg(model_dir, data, out, **kw) -> SFTConfig:
    base = dict(model=str(model_dir), data=str(data), out=str(out), val_fraction=0.0, batch_size=2, max_steps=2,
                lr=1e-2, warmup_steps=0, log_every=1, keep_best=False, device="cpu", max_length=64, seed=0)
    base.update(kw)
    return SFTConfig(**base)


class Snapshot(Callback):
    """Parameters (by name) at the start and the end of training, and the model itself."""

    def on_train_begin(self, trainer):
        self.model = trainer.raw
        self.before = {n: p.detach().clone() for n, p in trainer.raw.named_parameters()}
        self.trainable = {n for n, p in trainer.raw.named_parameters() if p.requires_grad}

    def on_train_end(self, trainer, result):
        self.after = {n: p.detach().clone() for n, p in trainer.raw.named_parameters()}


def run_sft(c: SFTConfig, **kw):
    from lmlab.train import sft

    snap = Snapshot()
    with extra_callbacks([snap]):
        result = sft.run(c, **kw)
    return result, snap


@pytest.mark.parametrize(
    ("tuning", "extra", "frozen_prefixes", "trained_prefixes"),
    [
        ("full", {}, [], ["model.layers.0.", "model.layers.1.", "model.embed_tokens."]),
        ("freeze", {"freeze": {"trainable_layers": 1}}, ["model.layers.0."], ["model.layers.1."]),
        ("lora", {"lora": {"rank": 4, "alpha": 8.0, "dropout": 0.0}}, ["base_layer", "embed_tokens"], ["lora_A", "lora_B"]),
    ],
)
def test_tuning_updates_only_trainable_parameters(tiny_qwen2_dir, chat_file, tmp_path, tuning, extra, frozen_prefixes, trained_prefixes):
    from lmlab.train.config import FreezeSettings, LoraSettings

    kw = {"tuning": tuning}
    if "freeze" in extra:
        kw["freeze"] = FreezeSettings(**extra["freeze"])
    if "lora" in extra:
        kw["lora"] = LoraSettings(**extra["lora"])
    result, snap = run_sft(cfg(tiny_qwen2_dir, chat_file, tmp_path / "run", **kw))
    changed = {n for n in snap.before if not torch.equal(snap.before[n], snap.after[n])}
    # frozen parameters are bit-identical; every trainable one moved
    assert changed == snap.trainable
    for prefix in frozen_prefixes:
        names = [n for n in snap.before if prefix in n]
        assert names and not any(n in changed for n in names), prefix
    for prefix in trained_prefixes:
        names = [n for n in snap.before if prefix in n]
        assert names and all(n in changed for n in names), prefix
    trainable_count = sum(snap.before[n].numel() for n in snap.trainable)
    assert result.metrics["trainable_params"] == trainable_count
    if tuning == "full":
        assert result.metrics["trainable_params"] == result.metrics["total_params"]
    else:
        assert 0 < result.metrics["trainable_params"] < result.metrics["total_params"]


def test_lora_final_reloads_with_same_logits(tiny_qwen2_dir, chat_file, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lmlab.train.config import LoraSettings

    c = cfg(tiny_qwen2_dir, chat_file, tmp_path / "lora", tuning="lora", max_steps=3,
            lora=LoraSettings(rank=4, alpha=8.0, dropout=0.0))
    result, snap = run_sft(c)
    final = result.path / "final"
    assert (final / "adapter_config.json").exists()  # the adapter, not a merged copy
    ids = torch.tensor([[3, 40, 50, 60, 4, 203, 3, 70]])
    trained = snap.model.eval()
    with torch.no_grad():
        want = trained(input_ids=ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir)
        reloaded = PeftModel.from_pretrained(base, final).eval()
        got = reloaded(input_ids=ids).logits
        plain = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir)(input_ids=ids).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert (got - plain).abs().max() > 1e-4  # the adapter does something


def test_resume_equals_uninterrupted(tiny_qwen2_dir, chat_file, tmp_path):
    full = cfg(tiny_qwen2_dir, chat_file, tmp_path / "a", max_steps=4, save_every=2, lr=3e-3)
    _, snap_a = run_sft(full)

    class Crash(Callback):
        def on_log(self, trainer, row):
            if row["step"] == 3:
                raise KeyboardInterrupt

    part = cfg(tiny_qwen2_dir, chat_file, tmp_path / "b", max_steps=4, save_every=2, lr=3e-3)
    with pytest.raises(KeyboardInterrupt), extra_callbacks([Crash()]):
        from lmlab.train import sft

        sft.run(part)
    assert not (tmp_path / "b" / "result.json").exists()
    _, snap_b = run_sft(part, resume=True)
    losses_a = [r["loss"] for r in read_jsonl(tmp_path / "a" / "metrics.jsonl") if r.get("split") == "train"]
    losses_b = [r["loss"] for r in read_jsonl(tmp_path / "b" / "metrics.jsonl") if r.get("split") == "train"]
    assert len(losses_a) == len(losses_b) == 4
    assert losses_b == pytest.approx(losses_a, rel=1e-6, abs=1e-7)
    for name, p in snap_a.after.items():
        torch.testing.assert_close(snap_b.after[name], p, atol=1e-6, rtol=1e-6)


def test_packed_training_equals_padded_training(tiny_qwen2_dir, chat_file, tmp_path):
    # All six chats fit in one micro-batch either way, so every step sees the same examples and
    # the same token-weighted loss: packing changes the layout, not the optimisation.
    padded = cfg(tiny_qwen2_dir, chat_file, tmp_path / "pad", batch_size=6, max_steps=3, lr=3e-3)
    packed = cfg(tiny_qwen2_dir, chat_file, tmp_path / "pack", batch_size=6, max_steps=3, lr=3e-3, packing=True)
    _, snap_pad = run_sft(padded)
    res_pack, snap_pack = run_sft(packed)
    l_pad = [r["loss"] for r in read_jsonl(tmp_path / "pad" / "metrics.jsonl") if r.get("split") == "train"]
    l_pack = [r["loss"] for r in read_jsonl(tmp_path / "pack" / "metrics.jsonl") if r.get("split") == "train"]
    assert l_pack == pytest.approx(l_pad, rel=1e-4)
    assert res_pack.metrics["batches_per_epoch"] == 1
    for name, p in snap_pad.after.items():
        torch.testing.assert_close(snap_pack.after[name], p, atol=1e-4, rtol=1e-4)


def test_memorises_tiny_set(tiny_qwen2_dir, chat_file, tmp_path):
    c = cfg(tiny_qwen2_dir, chat_file, tmp_path / "mem", batch_size=6, max_steps=80, lr=1e-2,
            samples=["the cat ran", "the dog said"])
    result, _ = run_sft(c)
    rows = [r for r in read_jsonl(tmp_path / "mem" / "metrics.jsonl") if r.get("split") == "train"]
    assert rows[0]["loss"] > 4.0  # ~ln(V) for a random model
    assert rows[-1]["loss"] < 0.05 * rows[0]["loss"]  # response loss driven to (near) memorised
    # greedy replies to chat-rendered prompts reproduce the trained replies, and stop at <|im_end|>
    samples = read_jsonl(tmp_path / "mem" / "samples.jsonl")
    assert [s["response"].strip() for s in samples] == ["tom found a red ball", "mia went to the park"]
    assert result.metrics["samples"] == samples


def test_truncation_stats_in_result(tiny_qwen2_dir, chat_file, tmp_path):
    from transformers import AutoTokenizer

    from lmlab.data.chat import encode_chat

    tok = AutoTokenizer.from_pretrained(tiny_qwen2_dir)
    full = [encode_chat(tok, [{"role": "user", "content": u}, {"role": "assistant", "content": a}]) for u, a in CHATS]
    first_reply = [next(i for i, x in enumerate(e.labels) if x != -100) for e in full]
    max_length = max(first_reply) + 3  # every example keeps >= 3 reply tokens, most lose some
    want_cut = sum(1 for e in full if len(e) > max_length)
    want_lost = sum(sum(1 for x in e.labels[max_length:] if x != -100) for e in full)
    assert want_cut > 0 and want_lost > 0
    result, _ = run_sft(cfg(tiny_qwen2_dir, chat_file, tmp_path / "trunc", max_steps=1, max_length=max_length))
    trunc = result.metrics["truncation"]
    assert trunc["truncated_examples"] == want_cut
    assert trunc["truncated_response_tokens"] == want_lost
    assert trunc["dropped_examples"] == 0
    saved = json.loads((tmp_path / "trunc" / "result.json").read_text())
    assert saved["truncation"] == trunc


def test_ablation_grid_table(tiny_qwen2_dir, chat_file, tmp_path):
    import math

    from lmlab.config import build
    from lmlab.train.ablation import AblationConfig
    from lmlab.train.ablation import run as ablate

    keys = dict(model=str(tiny_qwen2_dir), data=str(chat_file), out=str(tmp_path / "abl"), val_fraction=0.3,
                batch_size=2, lr=3e-3, device="cpu", max_length=64, keep_best=False,
                grid={"epochs": [1, 2], "data_fraction": [0.5, 1.0]}, samples=["the cat ran"], max_new_tokens=4)
    summary = ablate(build(AblationConfig, keys))
    rows = summary["rows"]
    assert [(r["epochs"], r["data_fraction"]) for r in rows] == [(1, 0.5), (1, 1.0), (2, 0.5), (2, 1.0)]
    n_train = rows[1]["train_examples"]
    for r in rows:
        want_train = math.ceil(r["data_fraction"] * n_train)
        assert r["train_examples"] == want_train  # nested subsets of one training split
        assert r["steps"] == math.ceil(r["epochs"] * math.ceil(want_train / 2))
        assert r["val_ppl"] == pytest.approx(math.exp(r["val_loss"]))
        assert isinstance(r["sample"], str)
    val_counts = {json.loads((tmp_path / "abl" / name / "result.json").read_text())["val_examples"]
                  for name in ("epochs1_data_fraction0.5", "epochs2_data_fraction1.0")}
    assert len(val_counts) == 1  # every cell is scored on the same held-out set
    table = (tmp_path / "abl" / "table.md").read_text().splitlines()
    assert sum(1 for line in table if line.startswith("| ") and "epochs" not in line) == 4
    import csv

    with open(tmp_path / "abl" / "table.csv", newline="") as fh:
        assert [float(r["val_ppl"]) for r in csv.DictReader(fh)] == pytest.approx([r["val_ppl"] for r in rows])
    assert json.loads((tmp_path / "abl" / "metrics.json").read_text())["rows"] == rows


def test_ablation_rejects_bad_grid(tiny_qwen2_dir):
    from lmlab.config import build
    from lmlab.errors import ConfigError
    from lmlab.train.ablation import AblationConfig

    with pytest.raises(ConfigError, match="unknown SFT key 'epoch'; did you mean 'epochs'"):
        build(AblationConfig, {"model": str(tiny_qwen2_dir), "grid": {"epoch": [1, 2]}})
    with pytest.raises(ConfigError, match="max_steps is set"):
        build(AblationConfig, {"model": str(tiny_qwen2_dir), "grid": {"epochs": [1, 2]}, "max_steps": 5})


def test_packing_refused_for_models_without_position_ids():
    from lmlab.errors import ConfigError
    from lmlab.models import build_model
    from lmlab.train.sft import check_packing

    torch.manual_seed(0)
    check_packing(build_model("transformer:tiny", 300))  # Llama: honours position_ids
    # our recurrent models restart their state at position_ids resets (tests/test_models.py)
    check_packing(build_model("rnn:tiny", 300))

    class NoPositions(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None):
            return input_ids

    with pytest.raises(ConfigError, match=r"NoPositions does not take position_ids.*packing=false"):
        check_packing(NoPositions())


def test_template_is_saved_with_final(tiny_qwen2_dir, chat_file, tmp_path):
    """template=alpaca trains on Alpaca-rendered prompts; final/ must carry that template so chat,
    serve and eval render the same text (the fixture tokenizer's own template is ChatML)."""
    from transformers import AutoTokenizer

    from lmlab.data.chat import render_prompt
    from lmlab.templates import get_template

    res, _ = run_sft(cfg(tiny_qwen2_dir, chat_file, tmp_path / "alp", template="alpaca", max_steps=1))
    tok = AutoTokenizer.from_pretrained(res.path / "final")
    assert tok.chat_template == get_template("alpaca")
    text = render_prompt(tok, "Tell a story")
    assert "### Instruction" in text and "<|im_start|>" not in text
