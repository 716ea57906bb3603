"""The loop's invariants: loss falls, exact accumulation, exact resume, NaN stop, checkpoints."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from lmlab.data.tokencache import BlockSource
from lmlab.errors import TrainingDiverged
from lmlab.runs import RunDir
from lmlab.train.config import TrainConfig
from lmlab.train.objectives import causal_lm_loss
from lmlab.train.steps import StepOutput, lm_step
from lmlab.train.trainer import Callback, Trainer

V = 40


def tiny_model(seed: int = 0, dropout: float = 0.0):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      attention_dropout=dropout, tie_word_embeddings=True)
    return Qwen2ForCausalLM(cfg)


def pattern_tokens(n: int = 4000, seed: int = 0) -> np.ndarray:
    """A learnable stream: short arithmetic runs (next = prev + 1 mod V) restarted at random points."""
    rng = np.random.default_rng(seed)
    out, cur = [], 0
    for _ in range(n):
        cur = int(rng.integers(0, V)) if rng.random() < 0.1 else (cur + 1) % V
        out.append(cur)
    return np.asarray(out, dtype=np.uint16)


def config(**kw) -> TrainConfig:
    base = dict(max_steps=6, batch_size=4, max_length=16, lr=3e-3, log_every=1, device="cpu", precision="fp32",
                warmup_steps=0, schedule="constant", save_total_limit=2)
    base.update(kw)
    return TrainConfig(**base)


class ListSource:
    """Fixed micro-batches, for tests that control every token."""

    def __init__(self, batches):
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def get(self, i):
        return self.batches[i % len(self.batches)]


def train_losses(run: RunDir) -> list[float]:
    return [r["loss"] for r in run.metrics() if r["split"] == "train"]


def test_loss_falls_and_logs_rows(tmp_path):
    toks = pattern_tokens()
    cfg = config(max_steps=40, eval_every=20, eval_batches=4, log_every=10)
    run = RunDir(tmp_path / "run")
    trainer = Trainer(tiny_model(), lm_step, BlockSource(toks[:3500], 16, 8, seed=0), cfg, run,
                      eval_source=BlockSource(toks[3500:], 16, 4, sequential=True))
    result = trainer.fit()
    rows = run.metrics()
    train = [r for r in rows if r["split"] == "train"]
    val = [r for r in rows if r["split"] == "val"]
    assert [r["step"] for r in train] == [10, 20, 30, 40]
    assert [r["step"] for r in val] == [20, 40]
    assert set(train[0]) >= {"step", "split", "loss", "lr", "grad_norm", "tokens", "tokens_per_s", "elapsed_s", "epoch"}
    assert train[0]["tokens"] == 10 * 8 * 16
    # random init starts near ln V = 3.69; the +1 pattern is learnable well below it
    assert train[0]["loss"] > 2.5
    assert val[-1]["loss"] < 0.6 * math.log(V)
    assert val[-1]["ppl"] == pytest.approx(math.exp(val[-1]["loss"]), rel=1e-6)
    assert result["val_loss"] == pytest.approx(min(r["loss"] for r in val))
    # the loop writes final/ but not the "finished" marker: the stage writes result.json last
    assert (run.final_dir / "config.json").exists() and not run.is_done()
    assert list(run.tb_dir.glob("events.out.tfevents.*"))


def _masked_rows(seed: int = 1):
    """8 rows whose label masks differ, so micro-batches hold different numbers of scored tokens."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (8, 12), generator=g)
    labels = ids.clone()
    for i in range(8):
        labels[i, : 1 + i] = -100  # row i scores 11 - i of its 11 shifted targets
    return ids, labels


@pytest.mark.parametrize("batch,accum", [(8, 1), (2, 4), (1, 8)])
def test_accumulation_is_exact(tmp_path, batch, accum):
    """The update's gradient is the token-mean over all 8 rows, whatever the split into micro-batches."""
    ids, labels = _masked_rows()
    source = ListSource([{"input_ids": ids[i:i + batch], "labels": labels[i:i + batch]} for i in range(0, 8, batch)])
    trainer = Trainer(tiny_model(), lm_step, source, config(max_steps=1, batch_size=batch, grad_accum=accum, clip_grad=None),
                      RunDir(tmp_path / f"r{batch}"))
    grads = {}

    def capture(opt, args, kwargs):
        for name, p in trainer.raw.named_parameters():
            grads[name] = p.grad.detach().clone()

    trainer.optimizer.optimizer.register_step_pre_hook(capture)
    trainer.fit()
    # oracle: one full-batch backward of the token-mean loss
    ref = tiny_model()
    loss, n = causal_lm_loss(ref(input_ids=ids).logits, labels)
    assert n == sum(11 - i for i in range(8))
    loss.backward()
    for name, p in ref.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, atol=1e-6, rtol=1e-5)


def _resume_cfg():
    return config(max_steps=6, save_every=3, eval_every=3, eval_batches=2)


def _resume_trainer(path, callbacks=()):
    toks = pattern_tokens(1500)
    return Trainer(tiny_model(dropout=0.2), lm_step, BlockSource(toks[:1200], 16, 4, seed=3), _resume_cfg(),
                   RunDir(path), eval_source=BlockSource(toks[1200:], 16, 4, sequential=True), callbacks=callbacks)


def test_resume_reproduces_uninterrupted_run(tmp_path):
    """Dropout on, so RNG state matters: the resumed run must log the very same losses and weights."""
    full = _resume_trainer(tmp_path / "full")
    full.fit()

    class Kill(Callback):
        def on_log(self, trainer, row):
            if row["step"] == 5:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _resume_trainer(tmp_path / "cut", [Kill()]).fit()
    cut = RunDir(tmp_path / "cut")
    assert [p.name for p in cut.checkpoints()] == ["step-3"] and not cut.is_done()
    assert len(train_losses(cut)) == 5  # rows 4, 5 written before the kill; resume must drop them
    resumed = _resume_trainer(tmp_path / "cut")
    resumed.fit(resume=True)
    full_rows = RunDir(tmp_path / "full").metrics()
    cut_rows = cut.metrics()
    assert [(r["step"], r["split"], r["loss"]) for r in cut_rows] == [(r["step"], r["split"], r["loss"]) for r in full_rows]
    for (n, a), (_, b) in zip(full.raw.state_dict().items(), resumed.raw.state_dict().items(), strict=True):
        assert torch.equal(a, b), n


def test_nan_stops_with_last_good_checkpoint(tmp_path):
    def nan_at_5(model, batch, ctx):
        out = lm_step(model, batch, ctx)
        if ctx.training and ctx.step == 4:  # the 5th update
            return StepOutput(out.loss * float("nan"), out.weight, out.tokens)
        return out

    run = RunDir(tmp_path / "run")
    trainer = Trainer(tiny_model(), nan_at_5, BlockSource(pattern_tokens(800), 16, 4), config(max_steps=8, save_every=2), run)
    with pytest.raises(TrainingDiverged) as err:
        trainer.fit()
    msg = str(err.value)
    assert "at step 5" in msg and "step-4" in msg and "lower lr" in msg and "precision=fp32" in msg
    assert [p.name for p in run.checkpoints()] == ["step-2", "step-4"]
    assert not run.final_dir.exists() and not run.is_done()
    state = json.loads((run.checkpoints_dir / "step-4" / "trainer_state.json").read_text())
    assert state["step"] == 4 and state["micro"] == 4
    assert max(r["step"] for r in run.metrics()) == 4


def _val_curve_step(model, batch, ctx):
    """Training is real; the val loss is scripted: (s - 2)² + 1 after update s, best at step 2."""
    if ctx.training:
        return lm_step(model, batch, ctx)
    s = ctx.step + 1
    return StepOutput(torch.tensor(float((s - 2) ** 2 + 1)), 1.0, 1)


def test_pruning_keeps_limit_plus_best_and_final_is_best(tmp_path):
    run = RunDir(tmp_path / "run")
    toks = pattern_tokens(800)
    trainer = Trainer(tiny_model(), _val_curve_step, BlockSource(toks, 16, 4),
                      config(max_steps=6, save_every=1, eval_every=1, save_total_limit=2, keep_best=True), run,
                      eval_source=BlockSource(toks, 16, 4, sequential=True))
    result = trainer.fit()
    assert [p.name for p in run.checkpoints()] == ["step-2", "step-5", "step-6"]
    assert result["best_step"] == 2 and result["val_loss"] == 1.0
    from safetensors.torch import load_file

    final = load_file(run.final_dir / "model.safetensors")
    best = load_file(run.checkpoints_dir / "step-2" / "model.safetensors")
    last = load_file(run.checkpoints_dir / "step-6" / "model.safetensors")
    key = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(final[key], best[key]) and not torch.equal(final[key], last[key])


def test_early_stopping(tmp_path):
    run = RunDir(tmp_path / "run")
    toks = pattern_tokens(800)
    trainer = Trainer(tiny_model(), _val_curve_step, BlockSource(toks, 16, 4),
                      config(max_steps=10, eval_every=1, early_stopping_patience=2), run,
                      eval_source=BlockSource(toks, 16, 4, sequential=True))
    result = trainer.fit()
    # best at 2; steps 3 and 4 do not improve → stop after step 4
    assert result["steps"] == 4 and result["stopped_early"] is True
    assert [r["step"] for r in run.metrics() if r["split"] == "val"] == [1, 2, 3, 4]


def test_failed_checkpoint_write_leaves_nothing(tmp_path, monkeypatch):
    run = RunDir(tmp_path / "run")
    trainer = Trainer(tiny_model(), lm_step, BlockSource(pattern_tokens(800), 16, 4), config(max_steps=1), run)
    trainer.fit()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    trainer.state.step = 7
    with pytest.raises(OSError):
        trainer._save_checkpoint()
    assert not (run.checkpoints_dir / "step-7").exists()
    assert [p.name for p in run.checkpoints_dir.iterdir()] == []  # no temporary folder left behind


def test_grad_clip_and_schedule_applied(tmp_path):
    """The lr row is the lr each update used; with clip_grad the logged norm is the pre-clip norm."""
    run = RunDir(tmp_path / "run")
    cfg = config(max_steps=4, schedule="linear", warmup_steps=2, min_lr_ratio=0.0, lr=1e-2, clip_grad=1e-3)
    Trainer(tiny_model(), lm_step, BlockSource(pattern_tokens(800), 16, 4), cfg, run).fit()
    rows = [r for r in run.metrics() if r["split"] == "train"]
    # warm-up 1/2, 2/2, then linear from 1 over the remaining 2 updates: 1, 1/2
    assert [r["lr"] for r in rows] == pytest.approx([0.5e-2, 1e-2, 1e-2, 0.5e-2])
    assert all(r["grad_norm"] > 1e-3 for r in rows)


def test_gradient_checkpointing_and_bf16(tmp_path):
    """Checkpointing recomputes activations: same update as without. bf16 autocast runs on CPU, close to fp32."""
    ids, labels = _masked_rows()
    source = ListSource([{"input_ids": ids, "labels": labels}])
    weights = {}
    for name, kw in {"fp32": {}, "ckpt": {"gradient_checkpointing": True}, "bf16": {"precision": "bf16"}}.items():
        trainer = Trainer(tiny_model(), lm_step, source, config(max_steps=2, batch_size=8, **kw), RunDir(tmp_path / name))
        trainer.fit()
        weights[name] = trainer.raw.model.layers[0].mlp.up_proj.weight.detach().clone()
        losses = train_losses(RunDir(tmp_path / name))
        weights[name + "_loss"] = losses
    torch.testing.assert_close(weights["ckpt"], weights["fp32"], atol=1e-6, rtol=1e-5)
    assert weights["bf16_loss"][0] == pytest.approx(weights["fp32_loss"][0], rel=2e-2)
    assert not torch.equal(weights["bf16"], weights["fp32"])  # bf16 really ran: not bit-identical


def test_precision_and_epochs_settings(tmp_path):
    from lmlab.errors import ConfigError

    source = BlockSource(pattern_tokens(800), 16, 4)  # 800 // 16 // 4 = 12 micro-batches per epoch
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        Trainer(tiny_model(), lm_step, source, config(precision="fp16"), RunDir(tmp_path / "a"))
    trainer = Trainer(tiny_model(), lm_step, source, config(max_steps=None, epochs=1.5, grad_accum=2), RunDir(tmp_path / "b"))
    assert trainer.total_steps == 9  # ceil(1.5 × 12 / 2)


DDP_SCRIPT = '''
import json, os, sys
sys.path.insert(0, {tests!r})
from test_trainer import ListSource, _masked_rows, config, tiny_model
from lmlab.runs import RunDir
from lmlab.train.steps import lm_step
from lmlab.train.trainer import Trainer
ids, labels = _masked_rows()
src = ListSource([{{"input_ids": ids[i:i + 2], "labels": labels[i:i + 2]}} for i in range(0, 8, 2)])
tr = Trainer(tiny_model(), lm_step, src, config(max_steps=1, batch_size=2, grad_accum=2, clip_grad=None), RunDir({out!r}))
grads = {{}}
tr._torch_opt.register_step_pre_hook(lambda o, a, k: grads.update((n, p.grad.clone()) for n, p in tr.raw.named_parameters()))
res = tr.fit()
import torch
torch.save(grads, os.path.join({out!r}, f"grads-{{tr.rank}}-of-{{tr.world}}.pt"))
'''


@pytest.mark.slow
def test_data_parallel_two_processes_equal_full_batch(tmp_path):
    """torchrun, 2 CPU processes (gloo), batch 2 × accum 2 each: the update is the 8-row token mean."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "ddp"
    out.mkdir()
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(tests=str(Path(__file__).parent), out=str(out)))
    torchrun = Path(sys.executable).parent / "torchrun"
    subprocess.run([str(torchrun), "--nproc_per_node", "2", str(script)], check=True, timeout=600,
                   env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True)
    ids, labels = _masked_rows()
    ref = tiny_model()
    loss, _ = causal_lm_loss(ref(input_ids=ids).logits, labels)
    loss.backward()
    for rank in (0, 1):
        grads = torch.load(out / f"grads-{rank}-of-2.pt")
        for name, p in ref.named_parameters():
            torch.testing.assert_close(grads[name], p.grad, atol=1e-6, rtol=1e-5)
    rows = RunDir(out).metrics()
    assert len(rows) == 1 and rows[0]["loss"] == pytest.approx(float(loss.detach()), abs=1e-6)  # main process logs, global mean
