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
    c = cfg(tiny_qwen2_dir, chat_file, tmp_path / "mem", batch_size=6, max_steps=60, lr=1e-2)
    run_sft(c)
    rows = [r for r in read_jsonl(tmp_path / "mem" / "metrics.jsonl") if r.get("split") == "train"]
    assert rows[0]["loss"] > 4.0  # ~ln(V) for a random model
    assert rows[-1]["loss"] < 0.25 * rows[0]["loss"]  # response loss driven towards memorised


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
