"""What the loop holds since wave 2: companions, references under LoRA, parameter groups, a
selection metric other than val loss, refillable (RL-style) sources with exact resume, keys changed
on --resume, declared weights, and the finished marker written last by the stage."""
from __future__ import annotations

import json

import pytest
import torch

from lmlab.data.tokencache import BlockSource
from lmlab.runs import RunDir
from lmlab.train.objectives import causal_lm_loss
from lmlab.train.steps import StepOutput, lm_step, with_weight
from lmlab.train.trainer import Callback, Trainer
from test_trainer import ListSource, _masked_rows, config, pattern_tokens, tiny_model, train_losses


# -- companions ---------------------------------------------------------------------------------
def test_companion_is_placed_frozen_never_trained_or_saved(tmp_path):
    companion = tiny_model(seed=1)
    companion.train()
    before = {n: p.detach().clone() for n, p in companion.named_parameters()}
    seen = {}

    def step(model, batch, ctx):
        ref = ctx.companions["ref"]
        seen["ref_is_ctx_ref"] = ref is ctx.ref_model
        seen["training"] = ref.training
        with torch.no_grad():
            ref_logits = ref(input_ids=batch["input_ids"]).logits
        out = lm_step(model, batch, ctx)
        # a loss that also reads the companion: its gradient must not reach the companion
        return StepOutput(out.loss + 0.0 * ref_logits.sum(), out.weight, out.tokens)

    with_weight(step, lm_step.weight_of)
    run = RunDir(tmp_path / "run")
    trainer = Trainer(tiny_model(), step, BlockSource(pattern_tokens(800), 16, 4), config(max_steps=3, save_every=3), run,
                      companions={"ref": companion})
    trainer.fit()
    assert seen == {"ref_is_ctx_ref": True, "training": False}
    assert all(not p.requires_grad for p in companion.parameters())
    for n, p in companion.named_parameters():
        assert torch.equal(p, before[n]), n
    optimised = {id(p) for g in trainer._torch_opt.param_groups for p in g["params"]}
    assert not optimised & {id(p) for p in companion.parameters()}
    from safetensors.torch import load_file

    saved = load_file(run.checkpoints_dir / "step-3" / "model.safetensors")
    assert set(saved) == set(trainer.raw.state_dict()) - {"lm_head.weight"} or set(saved) <= set(trainer.raw.state_dict())
    assert trainer.ctx.policy is trainer.raw


def _lora_adapter(base_dir, out_dir, seed: int):
    """A LoRA adapter on the tiny base with non-zero B (a fresh adapter is the identity)."""
    from lmlab.models.load import apply_tuning, load_model
    from lmlab.train.config import LoraSettings

    model, tok = load_model(str(base_dir))
    model = apply_tuning(model, "lora", LoraSettings(rank=4, alpha=8, dropout=0.0), None)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


def test_reference_under_lora(tiny_qwen2_dir, tmp_path):
    """LoRA on a full model: the reference is the policy with adapters off (= the base, no copy).
    Starting from an SFT *adapter*: adapters off would be the base; the reference must be the SFT model."""
    from types import SimpleNamespace

    from lmlab.models.load import apply_tuning, load_model
    from lmlab.train.companions import load_reference, reference_logits
    from lmlab.train.config import LoraSettings

    ids = torch.tensor([[5, 9, 12, 40, 7, 3]])
    base, _ = load_model(str(tiny_qwen2_dir))
    base_logits = base(input_ids=ids).logits

    # (a) policy = fresh LoRA on the full model, perturbed as training would
    policy = apply_tuning(load_model(str(tiny_qwen2_dir))[0], "lora", LoraSettings(rank=4, alpha=8, dropout=0.0), None)
    with torch.no_grad():
        for n, p in policy.named_parameters():
            if "lora_B" in n:
                p.add_(0.3)
    assert load_reference(str(tiny_qwen2_dir), policy=policy) is None
    ctx = SimpleNamespace(companions={}, ref_model=None, policy=policy)
    torch.testing.assert_close(reference_logits(ctx, input_ids=ids), base_logits)
    assert not torch.allclose(policy(input_ids=ids).logits, base_logits, atol=1e-4)

    # (b) the starting model is an SFT adapter: the reference is base + that adapter, frozen
    sft_dir = _lora_adapter(tiny_qwen2_dir, tmp_path / "sft", seed=3)
    sft_model, _ = load_model(str(sft_dir))
    sft_logits = sft_model(input_ids=ids).logits
    assert not torch.allclose(sft_logits, base_logits, atol=1e-3)  # the adapter matters
    policy2 = apply_tuning(load_model(str(sft_dir))[0], "lora", LoraSettings(rank=4, alpha=8, dropout=0.0), None)
    ref = load_reference(str(sft_dir), policy=policy2)
    assert ref is not None and not any(p.requires_grad for p in ref.parameters()) and not ref.training
    ctx2 = SimpleNamespace(companions={"ref": ref}, ref_model=ref, policy=policy2)
    torch.testing.assert_close(reference_logits(ctx2, input_ids=ids), sft_logits, atol=1e-5, rtol=1e-5)


# -- parameter groups and selection ------------------------------------------------------------
def test_parameter_groups_have_their_own_lr(tmp_path):
    """Adam's first update moves every parameter with a non-zero gradient by ≈ lr·sign(g): the
    embedding group at 1e-2, the rest at 1e-3."""
    model = tiny_model()
    emb = model.model.embed_tokens.weight

    def groups(m):
        rest = [p for p in m.parameters() if p is not emb]
        return [{"params": [emb], "name": "embed", "lr": 1e-2}, {"params": rest, "name": "rest"}]

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = config(max_steps=1, lr=1e-3, weight_decay=0.0, clip_grad=None)
    trainer = Trainer(model, lm_step, BlockSource(pattern_tokens(800), 16, 4), cfg, RunDir(tmp_path / "g"), param_groups=groups)
    trainer.fit()
    assert [g["name"] for g in trainer._torch_opt.param_groups] == ["embed", "rest", "rest"]
    d_emb = (model.model.embed_tokens.weight - before["model.embed_tokens.weight"]).abs()
    d_up = (model.model.layers[0].mlp.up_proj.weight - before["model.layers.0.mlp.up_proj.weight"]).abs()
    assert d_emb.max().item() == pytest.approx(1e-2, rel=1e-3)
    assert d_up.max().item() == pytest.approx(1e-3, rel=1e-3)


def test_select_metric_from_evaluator_keeps_the_highest(tmp_path):
    """An evaluator's 'reward' picks final/ (highest wins) and drives early stopping."""
    scripted = {1: 0.2, 2: 0.9, 3: 0.5, 4: 0.4}

    def evaluator(trainer):
        return {"reward": scripted[trainer.state.step]}

    run = RunDir(tmp_path / "run")
    cfg = config(max_steps=10, eval_every=1, save_every=1, save_total_limit=1, select_metric="reward",
                 early_stopping_patience=2)
    trainer = Trainer(tiny_model(), lm_step, BlockSource(pattern_tokens(800), 16, 4), cfg, run, evaluator=evaluator)
    result = trainer.fit()
    assert result["best_step"] == 2 and result["best_value"] == 0.9 and result["steps"] == 4
    assert [r["reward"] for r in run.metrics() if r.get("split") == "val"] == [0.2, 0.9, 0.5, 0.4]
    from safetensors.torch import load_file

    final = load_file(run.final_dir / "model.safetensors")
    best = load_file(run.checkpoints_dir / "step-2" / "model.safetensors")
    key = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(final[key], best[key])


def test_unknown_select_metric_is_named(tmp_path):
    from lmlab.errors import ConfigError

    cfg = config(max_steps=1, select_metric="gold")
    trainer = Trainer(tiny_model(), lm_step, BlockSource(pattern_tokens(800), 16, 4), cfg, RunDir(tmp_path / "r"),
                      eval_source=BlockSource(pattern_tokens(400), 16, 4, sequential=True))
    with pytest.raises(ConfigError, match=r"select_metric='gold'.*loss"):
        trainer.fit()


# -- refillable sources --------------------------------------------------------------------------
class RolloutSource:
    """An RL-shaped source: every `per_round` micro-batches it samples a new buffer *from the current
    policy* (so the data depends on the weights and the RNG), then serves it. Its state (buffer, round,
    RNG) is what exact resume needs."""

    def __init__(self, per_round: int = 4, rows: int = 4, length: int = 12):
        self.per_round, self.rows, self.length = per_round, rows, length
        self.round, self.buffer, self.trainer, self.refills = -1, None, None, 0
        self.gen = torch.Generator().manual_seed(0)

    def __len__(self):
        return self.per_round

    def bind(self, trainer):
        self.trainer = trainer

    def _refill(self, round_):
        with self.trainer.generation_model() as model, torch.no_grad():
            assert not model.training
            ids = torch.randint(0, 40, (self.per_round * self.rows, 1), generator=self.gen)
            for _ in range(self.length - 1):
                probs = model(input_ids=ids).logits[:, -1].softmax(-1)
                ids = torch.cat([ids, torch.multinomial(probs, 1, generator=self.gen)], dim=1)
        self.buffer, self.round = ids, round_
        self.refills += 1

    def get(self, index):
        round_, k = divmod(index, self.per_round)
        if round_ != self.round:
            self._refill(round_)
        return {"input_ids": self.buffer[k * self.rows:(k + 1) * self.rows]}

    def state_dict(self):
        return {"round": self.round, "buffer": self.buffer, "gen": self.gen.get_state()}

    def load_state_dict(self, state):
        self.round, self.buffer = state["round"], state["buffer"]
        self.gen.set_state(state["gen"])

    def log_metrics(self):
        return {"refills": float(self.refills)}


class StopAfter(Callback):
    def __init__(self, step):
        self.step = step

    def on_log(self, trainer, row):
        if row["step"] == self.step:
            raise KeyboardInterrupt  # a kill between two steps, after checkpoint step-3


def test_refillable_source_resumes_mid_round_exactly(tmp_path):
    cfg = config(max_steps=8, save_every=3, lr=1e-2)
    full = RunDir(tmp_path / "full")
    Trainer(tiny_model(), lm_step, RolloutSource(), cfg, full).fit()
    part = RunDir(tmp_path / "part")
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_model(), lm_step, RolloutSource(), cfg, part, callbacks=[StopAfter(5)]).fit()
    src = RolloutSource()
    trainer = Trainer(tiny_model(), lm_step, src, cfg, part)
    trainer.fit(resume=True)  # resumes at step 3: mid-round (rounds start at 0, 4, 8): the buffer is restored
    assert train_losses(part) == pytest.approx(train_losses(full), abs=0, rel=1e-6)
    assert len(train_losses(full)) == 8 and src.refills == 1  # only round 1 sampled anew after resume
    assert [r["refills"] for r in full.metrics() if r.get("split") == "train"][-1] == 2


# -- resume with changed keys --------------------------------------------------------------------
def test_lr_changed_on_resume_takes_effect_and_is_logged(tmp_path):
    run = RunDir(tmp_path / "run")
    cfg = config(max_steps=6, save_every=3, lr=1e-2, schedule="constant")
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_model(), lm_step, BlockSource(pattern_tokens(800), 16, 4), cfg, run, callbacks=[StopAfter(4)]).fit()
    run.resume_changes = {"lr": (1e-2, 1e-3)}
    Trainer(tiny_model(), lm_step, BlockSource(pattern_tokens(800), 16, 4), config(max_steps=6, save_every=3, lr=1e-3,
            schedule="constant"), run).fit(resume=True)
    rows = run.metrics()
    assert [r["lr"] for r in rows if r.get("split") == "train"] == pytest.approx([1e-2] * 3 + [1e-3] * 3)
    event = [r for r in rows if r.get("event") == "resume_changes"]
    assert event == [{"step": 3, "event": "resume_changes", "lr": {"old": 1e-2, "new": 1e-3}}]


# -- declared weights ---------------------------------------------------------------------------
def test_declared_weight_must_match_the_step(tmp_path):
    ids, labels = _masked_rows()

    def liar(model, batch, ctx):
        out = lm_step(model, batch, ctx)
        return StepOutput(out.loss, out.weight + 1, out.tokens)

    with_weight(liar, lm_step.weight_of)
    trainer = Trainer(tiny_model(), liar, ListSource([{"input_ids": ids, "labels": labels}]), config(max_steps=1),
                      RunDir(tmp_path / "r"))
    with pytest.raises(AssertionError, match="weight_of"):
        trainer.fit()


def test_lm_weight_counts_the_shifted_labels():
    ids, labels = _masked_rows()
    _loss, n = causal_lm_loss(tiny_model()(input_ids=ids).logits, labels)
    assert lm_step.weight_of({"input_ids": ids, "labels": labels}) == n == sum(11 - i for i in range(8))


# -- the finished marker is the stage's last write -------------------------------------------------
def test_result_json_is_written_after_samples(tiny_qwen2_dir, tmp_path, monkeypatch):
    """A kill after training but before the samples leaves no result.json, so a rerun is not skipped."""
    from lmlab.train import sft
    from lmlab.train.config import SFTConfig

    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"hi {i}"},
                                                     {"role": "assistant", "content": "the cat ran"}]}) + "\n"
                            for i in range(8)))
    c = SFTConfig(model=str(tiny_qwen2_dir), data=str(data), out=str(tmp_path / "run"), max_steps=2, save_every=1,
                  batch_size=4, device="cpu", val_fraction=0.0, samples=["hello"])

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(sft, "write_samples", killed)
    with pytest.raises(KeyboardInterrupt):
        sft.run(c)
    assert (tmp_path / "run" / "final").is_dir() and not (tmp_path / "run" / "result.json").exists()
    monkeypatch.undo()
    res = sft.run(c, resume=True)
    assert (tmp_path / "run" / "result.json").exists() and res.metrics["samples"][0]["prompt"] == "hello"


# -- TensorBoard ----------------------------------------------------------------------------------
def _tb_scalars(tb_dir, tag):
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    mux = EventMultiplexer().AddRunsFromDirectory(str(tb_dir))
    mux.Reload()
    out = {}
    for run in mux.Runs():
        if tag in mux.GetAccumulator(run).Tags().get("scalars", []):
            for e in mux.Scalars(run, tag):
                out[e.step] = e.value
    return out


def test_tensorboard_holds_the_logged_losses_also_after_a_resume(tmp_path):
    run = RunDir(tmp_path / "run")
    cfg = config(max_steps=6, save_every=3)
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_model(), lm_step, BlockSource(pattern_tokens(800), 16, 4), cfg, run, callbacks=[StopAfter(5)]).fit()
    Trainer(tiny_model(), lm_step, BlockSource(pattern_tokens(800), 16, 4), cfg, run).fit(resume=True)
    logged = {r["step"]: r["loss"] for r in run.metrics() if r.get("split") == "train"}
    tb = _tb_scalars(run.tb_dir, "train/loss")
    assert sorted(tb) == sorted(logged) == [1, 2, 3, 4, 5, 6]
    for step, loss in logged.items():
        assert tb[step] == pytest.approx(loss, rel=1e-6)


def test_reference_logits_never_build_a_graph(tiny_qwen2_dir):
    """The reference is a fixed function: its logits carry no autograd graph even when the module
    handed in still has trainable parameters (a reference not passed through `freeze`)."""
    from transformers import AutoModelForCausalLM

    from lmlab.train.companions import reference_logits
    from lmlab.train.steps import StepContext

    ref = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir)
    assert any(p.requires_grad for p in ref.parameters())
    logits = reference_logits(StepContext(ref_model=ref), input_ids=torch.tensor([[1, 5, 7]]))
    assert not logits.requires_grad and logits.grad_fn is None
