"""Kill harness: real `lmlab train` processes SIGKILLed at seeded moments, resumed until finished.

For each scenario (pt transformer, pt lstm, sft with LoRA, rm, dpo, grpo, ppo) one uninterrupted reference run is
made, then episodes of the same run that are killed — mid-write of a checkpoint, just before one is
published, mid-prune, between the two renames that replace best/ or final/, just before
result.json, or at a random time (mid-step, mid-eval) — and resumed with `--resume` until one
finishes. After every kill: every checkpoint lmlab lists loads, and a stage marked finished has
its final model. After every episode: per-step train and val losses equal the reference's exactly,
the final weights are bitwise equal, and no temporary folder is left.

Kill points are set from outside lmlab (killpoints/sitecustomize.py, on PYTHONPATH of the child
only). Seeded (LMLAB_RELIABILITY_SEED, default 0) so a failure reproduces; `LMLAB_RELIABILITY_KILLS`
(default 20) sets how many kills in total. With LMLAB_RELIABILITY_FIGURES=DIR the figures are
written to DIR/kills.json (tests/reliability/figures.py reads them for docs/reliability.md).
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from chat_model import ENV
from conftest import _WORDS, corpus
from lmlab.runs import RunDir

HERE = Path(__file__).resolve().parent
KILLS = int(os.environ.get("LMLAB_RELIABILITY_KILLS", "20"))
SEED = int(os.environ.get("LMLAB_RELIABILITY_SEED", "0"))
PLANS = ("write", "publish", "prune", "swap", "finish", "time", "time")
LEFTOVER_SUFFIXES = (".tmp", ".partial", ".deleting", ".old")
COMMON = ["max_steps=10", "batch_size=4", "save_every=1", "save_total_limit=2", "eval_every=3",
          "eval_batches=2", "log_every=1", "--quiet"]
TINY_ARCH = "arch={hidden_size: 32, num_layers: 2, num_heads: 2, intermediate_size: 64}"
RL = ["max_length=64", "reward=test_online_rl:e_share", "rollout_batch=8", "max_new_tokens=6", "eval_prompts=2",
      "lr=1e-3"]


def scenarios(data: Path, tok: Path, model: Path) -> dict[str, list[str]]:
    return {
        # online RL first (the slowest; the pool runs two at a time, the short ones fill in after). Rounds
        # of 8 rollouts (GRPO: 2 optimizer steps a round, PPO: 2 epochs × 2), so a kill lands mid-round
        # and the resume must reuse the checkpointed rollout buffer
        "grpo": ["train", "grpo", f"model={model}", f"data={data}/chat.jsonl", *RL, "num_generations=4", "temperature=3"],
        "ppo": ["train", "ppo", f"model={model}", f"data={data}/chat.jsonl", *RL, "ppo_epochs=2", "kl_coef=0.1"],
        "pt-transformer": ["train", "pt", "model=transformer:tiny", TINY_ARCH, f"tokenizer={tok}", f"data={data}/pt.txt",
                           "max_length=32"],
        "pt-lstm": ["train", "pt", "model=lstm:tiny", "arch={hidden_size: 32, num_layers: 1}", f"tokenizer={tok}",
                    f"data={data}/pt.txt", "max_length=32"],
        "sft-lora": ["train", "sft", f"model={model}", "tuning=lora", "lora.rank=4", f"data={data}/chat.jsonl",
                     "max_length=96"],
        "rm": ["train", "rm", f"model={model}", f"data={data}/prefs.jsonl", "max_length=96"],
        "dpo": ["train", "dpo", f"model={model}", f"data={data}/prefs.jsonl", "max_length=96"],
    }


@dataclass
class Tally:
    kills: int = 0
    survived: int = 0
    episodes: int = 0
    mismatches: list[str] = field(default_factory=list)
    unloadable: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    half_finished: list[str] = field(default_factory=list)
    plans: dict[str, int] = field(default_factory=dict)


def lmlab(argv: list[str], out: Path, env: dict[str, str], *flags: str) -> int:
    cmd = [sys.executable, "-m", "lmlab", *argv, *COMMON, f"out={out}", *flags]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode not in (0, -9):
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc.returncode


def child_env(**extra: str) -> dict[str, str]:
    # tests/ too: the online-RL scenarios' reward is test_online_rl:e_share
    path = os.pathsep.join([str(HERE / "killpoints"), str(HERE.parent), ENV.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**ENV, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **extra}


def losses(run: Path) -> list[tuple[int, str, float]]:
    return [(r["step"], r.get("split", "train"), r["loss"]) for r in RunDir(run).metrics() if "loss" in r]


def weights(folder: Path) -> dict[str, bytes]:
    from safetensors.torch import load_file

    return {f"{f.name}:{k}": v.numpy().tobytes() for f in sorted(folder.glob("*.safetensors"))
            for k, v in load_file(str(f)).items()}


def check_after_kill(run: Path, tally: Tally, label: str) -> None:
    """What a kill may never leave: a listed checkpoint that does not load, a finished stage without its model."""
    import torch
    from safetensors.torch import load_file

    rd = RunDir(run)
    for ckpt in rd.checkpoints():
        try:
            load_file(str(ckpt / "model.safetensors"))
            json.loads((ckpt / "trainer_state.json").read_text())
            torch.load(ckpt / "optimizer.pt", weights_only=False)
            torch.load(ckpt / "scheduler.pt", weights_only=False)
        except Exception as exc:
            tally.unloadable.append(f"{label}: {ckpt.name}: {type(exc).__name__}: {exc}")
    if (rd.is_done() and not (rd.final_dir / "config.json").exists()) or (rd.is_done() and not weights(rd.final_dir)):
        tally.half_finished.append(f"{label}: result.json without a complete final/")


def leftovers(run: Path) -> list[str]:
    return [str(p.relative_to(run)) for p in run.rglob(".*") if p.name.endswith(LEFTOVER_SUFFIXES)]


def episode(name: str, argv: list[str], out: Path, ref: dict, rng: random.Random, budget: int, tally: Tally) -> int:
    """One run killed until it finishes (or `budget` kills are spent, then let finish); returns kills made."""
    made, flags = 0, ["--force"]
    while True:
        plan = ""
        if made < budget:  # only kill points the reference run reached (online RL swaps nothing; one finish)
            kind = rng.choice([k for k in PLANS if k == "time" or ref.get(k)])
            if kind == "time":
                plan = f"time:{rng.uniform(0.3, 1.0) * ref['seconds']:.2f}"
            else:
                plan = f"{kind}:{rng.randint(1, min(2, ref[kind]))}"
        rc = lmlab(argv, out, child_env(LMLAB_KILL=plan), *flags)
        flags = ["--resume"]
        if rc == 0:
            return made
        made += 1
        tally.kills += 1
        tally.plans[plan.partition(":")[0]] = tally.plans.get(plan.partition(":")[0], 0) + 1
        check_after_kill(out, tally, f"{name} kill {made} ({plan})")


def scenario(name: str, argv: list[str], want: int, seed: int, root: Path) -> Tally:
    """The reference run, then episodes until `want` kills were made."""
    rng, tally = random.Random(seed), Tally()
    ref_out, count = root / f"{name}-ref", root / f"{name}-count.json"
    assert lmlab(argv, ref_out, child_env(LMLAB_KILL_COUNT=str(count))) == 0
    ref = json.loads(count.read_text())
    # the kill points are reached (online RL keeps its best checkpoint out of pruning: 7 prunes)
    assert ref.get("publish", 0) == 10 and ref.get("prune", 0) >= 7, ref
    ref_losses, ref_weights = losses(ref_out), weights(RunDir(ref_out).final_dir)
    assert len([s for s in ref_losses if s[1] == "train"]) == 10 and ref_weights
    made = 0
    while made < want and tally.episodes < 2 * want:  # an episode whose first plan misses kills nothing
        out = root / f"{name}-{tally.episodes}"
        n = episode(name, argv, out, ref, rng, want - made, tally)
        made += n
        tally.episodes += 1
        problems = []
        if losses(out) != ref_losses:
            problems.append(f"{out.name}: losses differ: {losses(out)} vs {ref_losses}")
        if weights(RunDir(out).final_dir) != ref_weights:
            problems.append(f"{out.name}: final weights differ")
        tally.mismatches += problems
        if leftovers(out):
            tally.leftovers.append(f"{out.name}: {leftovers(out)}")
        tally.survived += n if not problems and not leftovers(out) else 0
    return tally


@pytest.mark.slow
def test_killed_runs_resume_to_the_uninterrupted_result(tmp_path, tiny_tokenizer_dir, model_dir):
    from concurrent.futures import ThreadPoolExecutor

    from corpus import chat, rows

    data = tmp_path / "data"
    data.mkdir()
    (data / "pt.txt").write_text("\n\n".join(corpus(300)))
    (data / "chat.jsonl").write_text(rows(*[chat(f"say {w}", f"the {w} ran home.") for w in _WORDS * 2]))
    (data / "prefs.jsonl").write_text(rows(*[{"prompt": f"about {w}", "chosen": f"the {w} is good.", "rejected": "no."}
                                             for w in _WORDS * 2]))
    runs = scenarios(data, tiny_tokenizer_dir, model_dir)
    per = [KILLS // len(runs) + (i < KILLS % len(runs)) for i in range(len(runs))]
    with ThreadPoolExecutor(2) as pool:  # two children at a time: one per core of a 2-core machine
        parts = list(pool.map(scenario, runs, runs.values(), per, [SEED * 100 + i for i in range(len(runs))],
                              [tmp_path] * len(runs)))
    tally = Tally()
    for part in parts:
        for key, value in part.__dict__.items():
            if isinstance(value, dict):
                for k, v in value.items():
                    tally.plans[k] = tally.plans.get(k, 0) + v
            else:
                setattr(tally, key, getattr(tally, key) + value)
    figures = os.environ.get("LMLAB_RELIABILITY_FIGURES")  # tests/reliability/figures.py collects these
    if figures:
        Path(figures, "kills.json").write_text(json.dumps(tally.__dict__, indent=1))
    print(json.dumps(tally.__dict__))
    assert tally.kills >= KILLS
    assert not tally.mismatches and not tally.unloadable and not tally.leftovers and not tally.half_finished, tally
    assert tally.survived == tally.kills
