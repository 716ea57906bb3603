"""Online RL (rollout.py, online.py): stop-token masks, log-probs as sampled, bad input, exact resume, a rise."""
from __future__ import annotations

import json

import pytest
import torch

from lmlab.errors import ConfigError, DataError
from lmlab.runs import read_jsonl
from lmlab.train.rollout import Sampling, completion_mask, forward_completion, sample


def e_share(prompts, completions, **kwargs):
    """A trivial reward: the share of characters that are 'e'."""
    return [c.count("e") / max(len(c), 1) for c in completions]


def one_value(prompts, completions, **kwargs):
    return [0.0]


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    from conftest import corpus

    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    with open(path, "w") as f:
        for line in corpus(48, seed=1):
            f.write(json.dumps({"prompt": " ".join(line.split()[:4]), "completion": "the cat"}) + "\n")
    return path


def test_completion_mask_keeps_the_first_stop_token_and_drops_the_rest():
    tokens = torch.tensor([[5, 6, 2, 7, 2], [5, 6, 7, 8, 9], [2, 0, 0, 0, 0]])
    mask, ended = completion_mask(tokens, [2])
    assert mask.int().tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert ended.tolist() == [True, False, True]
    mask, ended = completion_mask(tokens, [7, 2])  # several stop ids (eos, end of turn)
    assert mask.int().tolist()[1] == [1, 1, 1, 0, 0]


def test_logprobs_are_those_of_the_temperature_scaled_logits_that_sampled(tiny_qwen2_dir, monkeypatch):
    """Rollout log-probs recomputed by one forward pass (left padding, position ids) equal
    log softmax(logits / T) of the very logits the decode loop sampled from."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmlab.train import sampler

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_qwen2_dir)
    steps = []
    original = sampler.pick

    def pick(logits, *args, **kwargs):
        steps.append(logits.clone())
        return original(logits, *args, **kwargs)

    monkeypatch.setattr(sampler, "pick", pick)
    captured = {}
    T = 0.7
    torch.manual_seed(0)
    batch = sample(model, tok, ["the cat ran to the big", "a"], 2, Sampling(max_new_tokens=6, temperature=T))
    captured["logits"] = torch.stack(steps, dim=1)  # (N, C, V) raw logits per step
    cmask = batch["completion_mask"].bool()
    assert batch["input_ids"].shape[0] == 4 and batch["attention_mask"][1, 0] == 1 and batch["attention_mask"][3, 0] == 0
    with torch.no_grad():
        logp, _, values = forward_completion(model, batch, T)
    C = cmask.size(1)
    tokens = batch["input_ids"][:, -C:]
    expect = torch.log_softmax(captured["logits"][:, :C].float() / T, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    assert values is None
    assert torch.allclose(logp[cmask], expect[cmask], atol=1e-4)
    # at T=1 the numbers differ: the temperature is not cosmetic
    with torch.no_grad():
        logp1, _, _ = forward_completion(model, batch, 1.0)
    assert not torch.allclose(logp1[cmask], expect[cmask], atol=1e-3)


def _grpo(model, data, out, **kw):
    from lmlab.train.config import GRPOConfig

    base = dict(model=str(model), data=str(data), reward="test_online_rl:e_share", out=str(out), max_steps=4,
                batch_size=4, num_generations=4, rollout_batch=8, max_new_tokens=6, eval_prompts=4, log_every=1,
                lr=1e-3, max_length=64, schedule="constant")
    base.update(kw)
    return GRPOConfig(**base)


def _ppo(model, data, out, **kw):
    from lmlab.train.config import PPOConfig

    base = dict(model=str(model), data=str(data), reward="test_online_rl:e_share", out=str(out), max_steps=4,
                batch_size=4, rollout_batch=8, ppo_epochs=2, max_new_tokens=6, eval_prompts=4, log_every=1,
                lr=1e-3, max_length=64, schedule="constant", kl_coef=0.1, kl_target=1.0, kl_horizon=100, value_lr=1e-2)
    base.update(kw)
    return PPOConfig(**base)


def test_bad_input_is_refused_before_any_work(tiny_qwen2_dir, prompts_file, tmp_path):
    from lmlab.cli import COMMANDS, call
    from lmlab.train.online import run_grpo

    grpo = next(c for c in COMMANDS if c.name == "train grpo")
    with pytest.raises(ConfigError, match="num_generations=3 does not divide"):
        call(grpo, {"model": str(tiny_qwen2_dir), "num_generations": 3, "batch_size": 4})
    with pytest.raises(ConfigError, match="did you mean storyworld:gold"):
        run_grpo(_grpo(tiny_qwen2_dir, prompts_file, tmp_path / "a", reward="storyworld:gld"))
    with pytest.raises(DataError, match=r"prompt 0 has \d+ tokens; with max_new_tokens=6 it needs max_length >= \d+ \(now 8\)"):
        run_grpo(_grpo(tiny_qwen2_dir, prompts_file, tmp_path / "b", max_length=8))
    with pytest.raises(DataError, match=r"prompt 0 has \d+ tokens; .* needs more than the model's context of 256 positions"):
        run_grpo(_grpo(tiny_qwen2_dir, prompts_file, tmp_path / "b2", max_length=1024, max_new_tokens=254))
    with pytest.raises(DataError, match=r"test_online_rl:one_value returned 1 values for \d+ completions: \[0.0\]"):
        run_grpo(_grpo(tiny_qwen2_dir, prompts_file, tmp_path / "c", reward="test_online_rl:one_value"))


class _Crash(Exception):
    pass


def _train_rows(run):
    return [r for r in (json.loads(x) for x in open(run / "metrics.jsonl")) if r["split"] == "train"]


def _grpo_on_policy(model, data, out, **kw):
    """One update per round: the step's own log-probs serve as the old ones (no extra pass)."""
    return _grpo(model, data, out, rollout_batch=4, **kw)


@pytest.mark.parametrize("make", [_grpo, _grpo_on_policy, _ppo], ids=["grpo", "grpo-on-policy", "ppo"])
def test_a_run_killed_mid_round_resumes_with_the_same_losses(make, tiny_qwen2_dir, prompts_file, tmp_path):
    """Rounds of 4 steps (8 rollouts, micro-batch 4; PPO: 2 epochs; GRPO: 2 optimizer steps,
    rounds at 1-2, 3-4, ...); checkpoint every 2 steps; a crash at step 3, mid-round for PPO, resumes
    from step 2 and logs the same losses, rewards and KL as the run that never stopped."""
    from lmlab.train.online import run_online
    from lmlab.train.trainer import Callback, extra_callbacks

    stage = "ppo" if make is _ppo else "grpo"
    full = run_online(stage, make(tiny_qwen2_dir, prompts_file, tmp_path / "full", max_steps=6, save_every=2))

    class CrashAt3(Callback):
        def on_log(self, trainer, row):
            if row["step"] == 3:
                raise _Crash

    cfg = make(tiny_qwen2_dir, prompts_file, tmp_path / "cut", max_steps=6, save_every=2)
    with extra_callbacks([CrashAt3()]), pytest.raises(_Crash):
        run_online(stage, cfg)
    resumed = run_online(stage, cfg, resume=True)
    a, b = _train_rows(full.path), _train_rows(resumed.path)
    assert [r["step"] for r in b] == list(range(1, 7))
    for key in ("loss", "reward", "kl", "value_loss", "clip_fraction"):
        xa = [r.get(key) for r in a]
        xb = [r.get(key) for r in b]
        assert [x is None for x in xa] == [x is None for x in xb], key
        assert [x for x in xa if x is not None] == pytest.approx([x for x in xb if x is not None], rel=1e-5, abs=1e-7), key
    assert any(r["loss"] != 0 for r in a)
    # rollouts.jsonl: the rounds made again after the resume are not listed twice
    assert (full.path / "rollouts.jsonl").read_text() == (resumed.path / "rollouts.jsonl").read_text()


def test_ppo_saves_the_policy_and_its_value_head(tiny_qwen2_dir, prompts_file, tmp_path):
    from transformers import AutoModelForCausalLM

    from lmlab.models.value_head import VALUE_HEAD, PolicyWithValue
    from lmlab.train.online import run_ppo

    res = run_ppo(_ppo(tiny_qwen2_dir, prompts_file, tmp_path / "p", max_steps=2))
    final = res.path / "final"
    assert (final / VALUE_HEAD).exists()
    policy = AutoModelForCausalLM.from_pretrained(final)  # loads as a plain causal LM
    wrapped = PolicyWithValue(policy)
    assert wrapped.load_value_head(final) and wrapped.value_head.weight.abs().sum() > 0  # trained from zero
    rows = _train_rows(res.path)
    assert "explained_variance" in rows[0] and "kl" in rows[0] and rows[0]["kl_coef"] == pytest.approx(0.1)


@pytest.mark.slow
def test_grpo_raises_a_trivial_reward(tiny_qwen2_dir, prompts_file, tmp_path):
    """GRPO on 'share of e characters' at tiny scale: the held-out mean reward rises well above the start."""
    from lmlab.train.online import run_grpo

    res = run_grpo(_grpo(tiny_qwen2_dir, prompts_file, tmp_path / "rise", max_steps=40, batch_size=8, rollout_batch=16,
                         eval_prompts=8, eval_every=10, log_every=5, lr=1e-2, max_new_tokens=8))
    first, last = res.metrics["eval_reward_before"], res.metrics["eval_reward_after"]
    rounds = {json.loads(line)["round"] for line in (res.path / "rollouts.jsonl").read_text().split("\n") if line}
    assert rounds == set(range(20))  # 40 steps, 2 per round, every round's samples logged
    assert last > first + 0.05, (first, last)
    assert res.metrics["best_beats_start"] is True and res.metrics["best_value"] >= last


def test_a_run_that_never_beats_the_start_says_so(tiny_qwen2_dir, prompts_file, tmp_path, capsys, monkeypatch):
    """The kept checkpoint is the best trained one; when the starting policy scored higher, the
    result and the log say so (lr=0: every evaluation equals the start, none beats it)."""
    from lmlab.train.online import run_grpo

    monkeypatch.setenv("LMLAB_QUIET", "0")
    res = run_grpo(_grpo(tiny_qwen2_dir, prompts_file, tmp_path / "flat", max_steps=4, batch_size=4, rollout_batch=8,
                         eval_prompts=4, eval_every=2, lr=0.0, max_new_tokens=4))
    assert res.metrics["best_value"] == pytest.approx(res.metrics["eval_reward_before"])
    assert res.metrics["best_beats_start"] is False
    assert "no checkpoint beat the starting policy" in " ".join(capsys.readouterr().err.split())


@pytest.mark.slow
def test_ppo_sentiment_recipe_smoke(tmp_path):
    """recipes/ppo-sentiment.yaml at scale=smoke on an IMDB-shaped CSV: tokenizer → pt → classifier
    → PPO run end to end; the PPO stage reports the classifier reward before and after and logs
    KL, value loss and rollouts."""
    import csv
    import random
    from pathlib import Path

    from lmlab.recipes import RunConfig, run_recipe

    rng = random.Random(0)
    words = ["the", "film", "was", "a", "story", "actor", "plot", "scene", "with", "and", "this", "movie"]
    data = tmp_path / "reviews.csv"
    with open(data, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["review", "sentiment"])
        for i in range(200):
            good = i % 2 == 0
            text = " ".join(rng.choice(words) for _ in range(20)) + (" great fun, loved it." if good else " boring, awful.")
            w.writerow([text, "positive" if good else "negative"])
    recipe = Path(__file__).parent.parent / "recipes" / "ppo-sentiment.yaml"
    overrides = {stage: {"data": str(data)} for stage in ("tokenizer", "pt", "rm", "ppo")}
    run_recipe(RunConfig(recipe=str(recipe), scale="smoke", out=str(tmp_path / "run"), overrides=overrides))
    ppo = tmp_path / "run" / "ppo"
    result = json.loads((ppo / "result.json").read_text())
    assert result["steps"] == 4 and result["rewards"] == ["rm"]
    assert isinstance(result["eval_reward_before"], float) and isinstance(result["eval_reward_after"], float)
    rows = _train_rows(ppo)
    assert {"kl", "value_loss", "explained_variance", "reward/rm"} <= set(rows[0])
    lines = [x for x in (ppo / "rollouts.jsonl").read_text().split("\n") if x]
    assert len(lines) == 8  # one round: 8 rollouts × 2 epochs / micro-batch 4 = the 4 steps
    assert (ppo / "final" / "value_head.safetensors").exists()


def test_grpo_lora_reference_is_the_policy_with_adapters_off(tiny_qwen2_dir, prompts_file, tmp_path):
    """tuning=lora, β > 0: no second model is loaded; the reference is the policy with its adapters
    off, so the first round's KL is exactly 0 (LoRA's B starts at 0) and it grows once the adapter trains."""
    from lmlab.train.config import LoraSettings
    from lmlab.train.online import run_grpo

    res = run_grpo(_grpo(tiny_qwen2_dir, prompts_file, tmp_path / "lora", tuning="lora", beta=0.1, max_steps=6,
                         lr=5e-2, lora=LoraSettings(rank=4, alpha=8.0, dropout=0.0)))
    rows = [r for r in _train_rows(res.path) if "kl" in r]
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6) and rows[0]["kl_k3"] == pytest.approx(0.0, abs=1e-6)
    assert rows[-1]["kl"] != pytest.approx(0.0, abs=1e-4)


CALLS = {"n": 0}


def fails_later(prompts, completions, **kwargs):
    """Scores the evaluator's and the first two rounds' completions, then raises."""
    CALLS["n"] += 1
    if CALLS["n"] > 3:
        raise ValueError("the scoring service went away")
    return [0.0] * len(completions)


def test_a_reward_that_fails_mid_run_stops_and_keeps_the_last_checkpoint(tiny_qwen2_dir, prompts_file, tmp_path):
    from lmlab.train.online import run_grpo

    CALLS["n"] = 0
    cfg = _grpo(tiny_qwen2_dir, prompts_file, tmp_path / "f", reward="test_online_rl:fails_later", max_steps=8,
                save_every=2, eval_every=0)
    with pytest.raises(DataError, match="test_online_rl:fails_later raised ValueError: the scoring service went away"):
        run_grpo(cfg)
    run = tmp_path / "f"
    assert not (run / "result.json").exists()  # not finished: --resume continues from the checkpoint
    assert (run / "checkpoints" / "step-4").is_dir()  # rounds 0 and 1 (steps 1-4) were scored and trained


def test_prompts_from_records(tiny_qwen2_dir):
    """Chat records: the turns before the last reply, rendered with the generation header; the reply
    becomes the `answer` column. Labelled text: the first prompt_words words, raw."""
    from transformers import AutoTokenizer

    from lmlab.data.formats import ChatRecord, LabelledRecord, Message
    from lmlab.train.rollout import prompts_from_records

    tok = AutoTokenizer.from_pretrained(tiny_qwen2_dir)
    items = prompts_from_records([ChatRecord([Message("user", "Who is Tom?"), Message("assistant", "a cat")]),
                                  LabelledRecord("A truly<br />great film , I loved it", "positive")], tok, prompt_words=3)
    assert items[0].prompt == "Who is Tom?" and items[0].columns == {"answer": "a cat"}
    assert items[0].text == "<|im_start|>user\nWho is Tom?<|im_end|>\n<|im_start|>assistant\n"
    assert items[1].text == items[1].prompt == "A truly great" and items[1].columns == {"label": "positive"}


@pytest.mark.slow
def test_rl_storyworld_recipe_smoke(tmp_path):
    """recipes/rl-storyworld.yaml at scale=smoke: SFT → RM → PPO and GRPO toward the learned RM →
    GRPO on QA exact match → compare. The RL evaluations log the learned reward and the gold reward
    side by side (the over-optimisation table reads both), and the comparison holds all three models."""
    from lmlab.recipes import RunConfig, run_recipe

    out = tmp_path / "rl"
    stages = ["tokenizer", "pt", "sft", "rm", "ppo", "grpo", "grpo_qa", "compare", "compare_sampled"]
    run_recipe(RunConfig(recipe="recipes/rl-storyworld.yaml", scale="smoke", out=str(out), only=stages))
    for stage in ("ppo", "grpo"):
        result = json.loads((out / stage / "result.json").read_text())
        assert result["rewards"] == ["rm"]
        for key in ("eval_reward_before", "eval_reward_after", "eval_gold_before", "eval_gold_after"):
            assert isinstance(result[key], float), (stage, key)
        assert 0.0 <= result["eval_gold_after"] <= 1.0
        val = [r for r in read_jsonl(out / stage / "metrics.jsonl") if r.get("split") == "val"]
        assert val and {"reward", "gold"} <= set(val[-1])
        curve = result["reward_vs_kl"]  # the over-optimisation plot's points: start at KL 0, then each evaluation
        assert curve[0]["kl"] == 0.0 and curve[-1]["gold"] == pytest.approx(result["eval_gold_after"])
        assert (out / stage / "reward_vs_kl.png").stat().st_size > 10_000
    qa = json.loads((out / "grpo_qa" / "result.json").read_text())
    assert qa["rewards"] == ["storyworld:qa_exact"] and 0.0 <= qa["eval_reward_after"] <= 1.0
    metrics = json.loads((out / "compare" / "metrics.json").read_text())
    assert set(metrics["judges"]) == {"gold", "rm"} and len(metrics["text"]) == 3
    sampled = json.loads((out / "compare_sampled" / "metrics.json").read_text())  # the same prompts at T 0.7
    assert sampled["text"].keys() == metrics["text"].keys() and sampled["prompts"] == metrics["prompts"]


def test_rl_storyworld_recipe_plans_under_every_profile():
    from lmlab.config import load_yaml
    from lmlab.recipes import plan

    raw = load_yaml("recipes/rl-storyworld.yaml")
    for scale in (None, *raw["profiles"]):
        _, _, stages = plan(raw, source="recipes/rl-storyworld.yaml", scale=scale, overrides={}, out="/tmp/plan-only")
        assert [s.name for s in stages][-1] == "report"


def test_divergence_points_pair_each_evaluation_with_the_kl_reached_by_then():
    from lmlab.train.online import divergence_points

    rows = [{"step": 1, "split": "train", "kl": 0.5}, {"step": 2, "split": "train", "kl": 1.5},
            {"step": 2, "split": "val", "reward": 2.0, "gold": 0.4}, {"step": 3, "split": "train", "kl": 3.0},
            {"step": 4, "split": "val", "reward": 3.0, "gold": 0.3}]
    assert divergence_points({"reward": 1.0, "gold": 0.5}, rows) == [(0, 0.0, 1.0, 0.5), (2, 1.5, 2.0, 0.4), (4, 3.0, 3.0, 0.3)]
    assert divergence_points({"reward": 1.0}, rows) == []  # no gold column: nothing to compare


def test_eval_temperature_zero_evaluates_greedily(tiny_qwen2_dir, prompts_file, tmp_path):
    """eval_temperature=0: the evaluation is greedy, so it no longer depends on the seed (the
    training temperature's samples do); a negative value is refused before any work."""
    from lmlab.train.online import run_grpo

    def before(name, seed, temperature):
        res = run_grpo(_grpo(tiny_qwen2_dir, prompts_file, tmp_path / name, seed=seed, max_steps=2, lr=0.0,
                             eval_prompts=8, eval_temperature=temperature))
        return res.metrics["eval_reward_before"]

    assert before("g0", 0, 0.0) == before("g1", 1, 0.0)
    assert before("s0", 0, None) != before("s1", 1, None)
    from lmlab.cli import COMMANDS, call

    grpo = next(c for c in COMMANDS if c.name == "train grpo")
    with pytest.raises(ConfigError, match="eval_temperature must be >= 0"):
        call(grpo, {"model": str(tiny_qwen2_dir), "eval_temperature": -1, "out": str(tmp_path / "bad")})
    assert not (tmp_path / "bad").exists()
