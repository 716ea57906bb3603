"""`train dpo|kto|simpo|orpo` through the real CLI on the tiny Qwen2 fixture: step-0 values, exact
accumulation, cached == on-the-fly reference, the right reference under LoRA, clear errors, learning.

Step-0 values (the policy *is* the reference, so every log-ratio is 0):
- DPO sigmoid: −log σ(β·0) = ln 2 = 0.693147, whatever β;
- IPO: (0/|yw| − 0/|yl| − 1/(2β))² = 1/(4β²), so 1.0 at β = 0.5 and 25 at β = 0.1;
- KTO: z0 = max(0, 0) = 0, r = 0: desirable λ_D(1 − σ(0)) = λ_D/2, undesirable λ_U/2, so with
  λ_D = λ_U = w the mean is 0.5·w.
"""
from __future__ import annotations

import json
import math
import random

import pytest
import torch

from lmlab.cli import main
from lmlab.runs import read_jsonl

WORDS = ["the", "a", "cat", "dog", "tom", "mia", "ran", "found", "park", "ball", "red", "tree", "river"]


def write_pairs(path, n: int, seed: int = 0):
    """Pairs that differ only in their last word: chosen ends 'happy', rejected 'sad'."""
    rng = random.Random(seed)
    with open(path, "w") as fh:
        for _ in range(n):
            words = [rng.choice(WORDS) for _ in range(rng.randint(3, 6))]
            prompt = " ".join(rng.choice(WORDS) for _ in range(3))
            fh.write(json.dumps({"prompt": prompt, "chosen": " ".join([*words, "happy"]),
                                 "rejected": " ".join([*words, "sad"])}) + "\n")
    return path


def write_feedback(path, n: int, seed: int = 0):
    rng = random.Random(seed)
    with open(path, "w") as fh:
        for i in range(n):
            words = [rng.choice(WORDS) for _ in range(rng.randint(3, 6))]
            good = i % 2 == 0
            fh.write(json.dumps({"prompt": " ".join(rng.choice(WORDS) for _ in range(3)),
                                 "completion": " ".join([*words, "happy" if good else "sad"]), "label": good}) + "\n")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("prefdata")
    return {"pairs": write_pairs(root / "pairs.jsonl", 24), "feedback": write_feedback(root / "kto.jsonl", 24)}


def train(stage: str, model, data_file, out, *extra: str) -> list[dict]:
    """Run `lmlab train STAGE` on the fixture; returns the train rows of metrics.jsonl."""
    args = ["train", stage, f"model={model}", f"data={data_file}", f"out={out}", "max_steps=2", "log_every=1",
            "batch_size=2", "device=cpu", "judge_prompts=0", "val_fraction=0", "max_length=64", "seed=0",
            "keep_best=false", "lr=1e-3", *extra]
    assert main(args) == 0
    return [r for r in read_jsonl(out / "metrics.jsonl") if r["split"] == "train"]


# -- step 0 through the CLI ----------------------------------------------------------------------

def test_dpo_first_loss_is_ln2_with_zero_rewards(tmp_path, tiny_qwen2_dir, data):
    rows = train("dpo", tiny_qwen2_dir, data["pairs"], tmp_path / "dpo", "beta=0.3")
    first = rows[0]
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-6)
    for key in ("reward_chosen", "reward_rejected", "reward_margin", "kl_chosen"):
        assert first[key] == 0.0, key
    assert first["logp_chosen"] < 0 and first["logp_rejected"] < 0
    assert rows[1]["loss"] != first["loss"]  # the policy moved away from the reference
    result = json.loads((tmp_path / "dpo" / "result.json").read_text())
    assert result["stage"] == "dpo" and result["data_stats"]["kept"] == 24 and result["data_stats"]["identical"] == 0


@pytest.mark.parametrize("beta", [0.5, 0.1])
def test_ipo_first_loss_is_one_over_four_beta_squared(tmp_path, tiny_qwen2_dir, data, beta):
    rows = train("dpo", tiny_qwen2_dir, data["pairs"], tmp_path / "ipo", "loss=ipo", f"beta={beta}")
    assert rows[0]["loss"] == pytest.approx(1 / (4 * beta**2), rel=1e-6)


@pytest.mark.parametrize("weight", [1.0, 2.0])
def test_kto_first_loss_is_half_the_weight(tmp_path, tiny_qwen2_dir, data, weight):
    rows = train("kto", tiny_qwen2_dir, data["feedback"], tmp_path / "kto",
                 f"desirable_weight={weight}", f"undesirable_weight={weight}")
    assert rows[0]["loss"] == pytest.approx(0.5 * weight, abs=1e-6)
    assert rows[0]["kl"] == 0.0


# -- invariants ----------------------------------------------------------------------------------

def test_batch_4_accum_1_equals_batch_2_accum_2(tmp_path, tiny_qwen2_dir):
    """With 4 pairs in all (one update per epoch), batch 4 × 1 and 2 × 2 see the same pairs each
    step, so losses and metrics agree to float precision over several updates."""
    path = write_pairs(tmp_path / "four.jsonl", 4, seed=3)
    a = train("dpo", tiny_qwen2_dir, path, tmp_path / "a", "batch_size=4", "grad_accum=1", "max_steps=4", "lr=5e-3")
    b = train("dpo", tiny_qwen2_dir, path, tmp_path / "b", "batch_size=2", "grad_accum=2", "max_steps=4", "lr=5e-3")
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], abs=2e-6)
    assert [r["reward_margin"] for r in a] == pytest.approx([r["reward_margin"] for r in b], abs=2e-6)
    assert a[-1]["loss"] < math.log(2) - 1e-3  # and it learned something, so the check has teeth


def test_precomputed_reference_is_bitwise_the_on_the_fly_one(tmp_path, tiny_qwen2_dir, data):
    live = train("dpo", tiny_qwen2_dir, data["pairs"], tmp_path / "live", "max_steps=4", "lr=5e-3")
    cached = train("dpo", tiny_qwen2_dir, data["pairs"], tmp_path / "cached", "max_steps=4", "lr=5e-3", "precompute_ref=true")
    keys = ("loss", "reward_chosen", "reward_rejected", "reward_margin", "logp_chosen", "kl_chosen", "grad_norm")
    assert [[r[k] for k in keys] for r in live] == [[r[k] for k in keys] for r in cached]
    assert live[-1]["reward_margin"] != 0.0  # the reference really entered the numbers
    state = torch.load(tmp_path / "cached" / "ref_logps.pt", weights_only=True)
    assert state["values"].shape == (24, 2) and state["done"] == 4  # max_steps=4 × 2 pairs: 4 of 12 micro-batches


def test_reference_cache_resumes_and_is_reused(tmp_path, tiny_qwen2_dir, data):
    """A pass killed after 2 micro-batches continues at the third; a finished cache is not recomputed."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmlab.data.alignment_batches import EncodeOptions, PolicyPairBatches, encode_policy_pairs
    from lmlab.data.loaders import load_records
    from lmlab.train.objectives import sequence_logps
    from lmlab.train.refcache import precompute

    tok = AutoTokenizer.from_pretrained(tiny_qwen2_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir).eval()
    pairs, _ = encode_policy_pairs(tok, load_records(str(data["pairs"]), "preference"), EncodeOptions(max_length=64))
    calls = []

    def logps(batch):
        calls.append(int(batch["index"][0]))
        if len(calls) == 3 and not getattr(logps, "survived", False):
            logps.survived = True
            raise KeyboardInterrupt
        with torch.no_grad():
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return sequence_logps(out, batch["labels"])[0]

    src = PolicyPairBatches(pairs, 2, tok.pad_token_id, seed=0)
    path = tmp_path / "ref_logps.pt"
    with pytest.raises(KeyboardInterrupt):
        precompute(src, logps, path, "m", save_every=1)
    assert torch.load(path, weights_only=True)["done"] == 2
    calls.clear()
    values = precompute(src, logps, path, "m", save_every=1)
    assert len(calls) == len(src) - 2  # only the missing micro-batches
    calls.clear()
    again = precompute(src, logps, path, "m")
    assert calls == [] and torch.equal(values, again)
    for i in range(len(src)):  # every unit got the value of its own rows
        b = src.get(i)
        with torch.no_grad():
            want = sequence_logps(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"])[0]
        B = b["index"].numel()
        assert torch.equal(values[b["index"], 0], want[:B]) and torch.equal(values[b["index"], 1], want[B:])
    other = precompute(src, logps, path, "another-reference")  # a different reference: recomputed
    assert len(calls) == len(src) and torch.equal(other, values)
    calls.clear()
    part = precompute(src, logps, tmp_path / "part.pt", "m", upto=2)  # a run shorter than an epoch
    first_two = torch.cat([src.get(i)["index"] for i in range(2)])
    assert len(calls) == 2 and torch.equal(part[first_two], values[first_two])
    assert int(torch.isnan(part).any(-1).sum()) == len(pairs) - len(first_two)
    calls.clear()
    full = precompute(src, logps, tmp_path / "part.pt", "m")  # more steps later: the same file continues
    assert len(calls) == len(src) - 2 and torch.equal(full, values)


# -- which model is the reference ----------------------------------------------------------------

@pytest.fixture(scope="module")
def sft_adapter(tmp_path_factory, tiny_qwen2_dir):
    """An 'SFT run trained with LoRA': an adapter folder over tiny_qwen2 whose B matrices are not zero."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    path = tmp_path_factory.mktemp("sft_lora")
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_qwen2_dir).save_pretrained(path)
    return path


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_reference_of_a_lora_sft_model_is_that_model_not_its_base(sft_adapter, tiny_qwen2_dir):
    from transformers import AutoModelForCausalLM

    from lmlab.config import build
    from lmlab.models.load import load_model
    from lmlab.train.config import DPOConfig
    from lmlab.train.preference import load_policy, load_ref

    ids = torch.tensor([[5, 17, 42, 99, 3, 8]])
    sft, _ = load_model(str(sft_adapter), device="cpu")  # base + adapter, as `lmlab chat` would run it
    base = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir).eval()
    assert not torch.allclose(_logits(sft, ids), _logits(base, ids), atol=1e-3)  # the adapter matters
    for tuning in ("full", "lora"):
        cfg = build(DPOConfig, {"model": str(sft_adapter), "tuning": tuning, "device": "cpu"})
        policy, _ = load_policy(cfg)
        ref = load_ref(cfg, policy)
        assert ref is not None, tuning
        torch.testing.assert_close(_logits(ref, ids), _logits(sft, ids), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(_logits(policy.eval(), ids), _logits(sft, ids), atol=1e-5, rtol=1e-5)
        assert not any(p.requires_grad for p in ref.parameters())


def test_lora_on_a_full_model_uses_adapters_off_as_reference(tmp_path, tiny_qwen2_dir, data):
    """No second model: the reference is the policy with its adapters off, i.e. the starting model,
    also after training moved the adapters (step 0 is still ln 2)."""
    from transformers import AutoModelForCausalLM

    from lmlab.config import build
    from lmlab.train.companions import reference_logits
    from lmlab.train.config import DPOConfig
    from lmlab.train.preference import load_policy, load_ref
    from lmlab.train.steps import StepContext

    cfg = build(DPOConfig, {"model": str(tiny_qwen2_dir), "tuning": "lora", "device": "cpu"})
    policy, _ = load_policy(cfg)
    assert load_ref(cfg, policy) is None
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    ids = torch.tensor([[5, 17, 42, 99, 3, 8]])
    base = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir).eval()
    ref = reference_logits(StepContext(policy=policy), input_ids=ids)
    torch.testing.assert_close(ref, _logits(base, ids), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(_logits(policy.eval(), ids), ref, atol=1e-3)
    rows = train("dpo", tiny_qwen2_dir, data["pairs"], tmp_path / "lora", "tuning=lora", "lora.rank=4")
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)


# -- bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("stage", "extra", "message"), [
    ("dpo", ["beta=0"], "beta must be > 0"),
    ("dpo", ["beta=-1"], "beta must be > 0"),
    ("dpo", ["loss=sigmod"], "did you mean 'sigmoid'"),
    ("dpo", ["loss=sigmoid+sft", "loss_weights=1,2,3"], "give one per loss"),
    ("kto", ["batch_size=1"], "needs batch_size >= 2"),
    ("simpo", ["ref_model=runs/sft"], "SimPO uses no reference model"),
    ("orpo", ["precompute_ref=true"], "ORPO uses no reference model"),
    ("simpo", ["loss=simpoo"], "did you mean 'simpo'"),
])
def test_bad_settings_are_clear_errors_before_any_work(tmp_path, capsys, stage, extra, message):
    rc = main(["train", stage, "model=does/not/matter", f"out={tmp_path / 'x'}", *extra])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()  # refused before the run folder was made


def test_missing_field_names_file_line_and_fix(tmp_path, capsys, tiny_qwen2_dir):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"question": "q", "good": "a", "bad": "b"}) + "\n")
    rc = main(["train", "dpo", f"model={tiny_qwen2_dir}", f"data={path}", f"out={tmp_path / 'x'}", "device=cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and f"{path}:1" in err and "columns=" in err and "Traceback" not in err


# -- it learns -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_dpo_learns_the_preference_on_held_out_pairs(tmp_path, tiny_qwen2_dir):
    """Chosen ends 'happy', rejected 'sad': after 40 steps the implicit reward ranks held-out pairs
    right far above chance, and the held-out loss fell below ln 2."""
    train_file = write_pairs(tmp_path / "train.jsonl", 96, seed=1)
    val_file = write_pairs(tmp_path / "val.jsonl", 24, seed=2)
    out = tmp_path / "learn"
    assert main(["train", "dpo", f"model={tiny_qwen2_dir}", f"data={train_file}", f"eval_data={val_file}", f"out={out}",
                 "max_steps=40", "batch_size=8", "lr=3e-3", "beta=0.1", "eval_every=20", "eval_batches=0", "log_every=10",
                 "device=cpu", "judge_prompts=0", "max_length=64", "precompute_ref=true"]) == 0
    val = [r for r in read_jsonl(out / "metrics.jsonl") if r["split"] == "val"]
    assert val[-1]["reward_accuracy"] >= 0.9
    assert val[-1]["loss"] < 0.5 * math.log(2)


@pytest.mark.slow
def test_align_storyworld_recipe_smoke(tmp_path):
    """The whole recipe (tokenizer → pt → SFT → RM → DPO/IPO/KTO/SimPO/ORPO → compare → report) at
    scale=smoke: every preference stage starts at its step-0 value from the one SFT model, and the
    comparison holds all six models under both judges. ~20 s of CPU."""
    from lmlab.recipes import RunConfig, run_recipe

    out = tmp_path / "align"
    stages = ["tokenizer", "pt", "sft", "rm", "dpo", "ipo", "kto", "simpo", "orpo", "compare"]  # the report is tested elsewhere
    run_recipe(RunConfig(recipe="recipes/align-storyworld.yaml", scale="smoke", out=str(out), only=stages))
    first = {s: read_jsonl(out / s / "metrics.jsonl")[0] for s in ("dpo", "ipo", "kto")}
    assert first["dpo"]["loss"] == pytest.approx(math.log(2), abs=1e-6) and first["dpo"]["step"] == 1
    assert first["ipo"]["loss"] == pytest.approx(1 / (4 * 0.5**2), abs=1e-5)
    assert first["kto"]["loss"] == pytest.approx(0.5, abs=1e-6)
    for stage in ("dpo", "ipo", "kto", "simpo", "orpo"):
        result = json.loads((out / stage / "result.json").read_text())
        assert result["stage"] == ("dpo" if stage == "ipo" else stage)
        assert 0.0 <= result["gold_mean"] <= 1.0 and result["heldout_prompts"] == 2
        assert -1e-4 < result["kl_ref"] < 0.05  # KL to the SFT model (ORPO/SimPO too): 2 tiny steps stay next to it
    metrics = json.loads((out / "compare" / "metrics.json").read_text())
    assert set(metrics["judges"]) == {"gold", "rm"} and len(metrics["text"]) == 6


@pytest.mark.parametrize("recipe", ["recipes/align-storyworld.yaml", "recipes/rm-dpo-preferences.yaml"])
def test_alignment_recipes_plan_under_every_profile(recipe):
    """Every stage of every profile is a valid command with valid keys (checked before any work)."""
    from lmlab.config import load_yaml
    from lmlab.recipes import plan

    raw = load_yaml(recipe)
    for scale in (None, *raw["profiles"]):
        _, _, stages = plan(raw, source=recipe, scale=scale, overrides={}, out="/tmp/plan-only")
        commands = {s.command for s in stages}
        assert {"train dpo", "train kto", "train simpo", "train orpo", "eval compare"} <= commands
