"""`lmlab data pairs`: a model's own answers, ranked by a judge, as preference pairs.

The reward models of the RLHF papers learn from several answers *of the policy itself* to one
prompt, ranked by a labeller (Stiennon et al. 2020 §3; Ouyang et al. 2022 §3.5), not from
corruptions of a reference answer. Such pairs show the reward model the mistakes this policy
actually makes, which is what PPO/GRPO will later push on. Here the labeller is any judge
`eval compare` accepts: the storyworld gold judge or a reward-model folder.

For each prompt: `samples` answers at `temperature` (one generate call, a fixed seed), every
answer scored, the best and the worst kept as (chosen, rejected) when their scores differ by at
least `min_gap` (ties teach nothing). Writes `pairs.jsonl` (prompt, chosen, rejected and both
scores, readable by every preference stage) and, last, `result.json` with the counts.

    lmlab data pairs model=runs/quickstart/sft prompts=storyworld/prefs split=train n=3000 samples=4 judge=gold out=runs/sw-pairs
    lmlab train rm model=runs/quickstart/sft data=runs/sw-pairs/pairs.jsonl
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmlab.config import opt
from lmlab.errors import ConfigError


@dataclass
class PairsConfig:
    """`lmlab data pairs`: sample answers from a model, rank them with a judge, keep best vs worst."""

    model: str = opt(help="the model whose answers are ranked (a run folder, model folder or hub id)")
    prompts: str = opt("storyworld/prefs", "prompts: a named set or file of chats/prompts, or a .txt file (one a line)")
    split: str = opt("train", "split of a named prompt set (train: the pairs are for training; keep held-out prompts held out)")
    n: int = opt(1000, "number of prompts")
    samples: int = opt(4, "answers sampled per prompt; the best and the worst become a pair")
    judge: str = opt("gold", "the labeller: gold (storyworld judge) or a reward-model folder")
    min_gap: float = opt(0.05, "keep a pair only when best − worst score >= this (ties teach nothing)")
    out: str = opt("runs/pairs", "folder for pairs.jsonl and result.json")
    template: str = opt("auto", "chat template used to render prompts (the model's own by default)")
    system: str | None = opt(None, "system prompt added to every prompt")
    max_new_tokens: int = opt(128, "tokens generated per answer")
    temperature: float = opt(1.0, "sampling temperature (> 0: the answers must differ)")
    top_k: int = opt(0, "sample only among the k most likely tokens (0 = off)")
    top_p: float = opt(1.0, "nucleus sampling mass (1 = off)")
    seed: int = opt(0, "sampling seed")
    batch_size: int = opt(16, "prompts per generate / score call")
    max_length: int = opt(512, "tokens per prompt + answer given to a reward-model judge")
    device: str = opt("auto", "auto, cpu, cuda, mps")

    def validate(self) -> list[str]:
        problems = []
        if self.samples < 2:
            problems.append(f"samples must be >= 2 (a pair needs two answers), got {self.samples}")
        if self.temperature <= 0:
            problems.append(f"temperature must be > 0: greedy answers to one prompt are all the same, got {self.temperature}")
        if self.n < 1:
            problems.append(f"n must be >= 1, got {self.n}")
        if self.min_gap < 0:
            problems.append(f"min_gap must be >= 0, got {self.min_gap}")
        if "," in self.judge:
            problems.append(f"judge={self.judge!r}: one labeller ranks the answers; give gold or one reward-model folder")
        return problems


def best_and_worst(scores: Sequence[float], min_gap: float) -> tuple[int, int] | None:
    """(index of the best, index of the worst) answer, or None when they are within `min_gap`.

    The first of equal scores wins either way, so the choice is deterministic.
    """
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    worst = min(range(len(scores)), key=lambda i: (scores[i], i))
    return (best, worst) if scores[best] - scores[worst] >= min_gap and best != worst else None


def _prompt_json(prompt: Any) -> Any:
    """A prompt as pairs.jsonl stores it: the text of a single user turn, else the message list."""
    if isinstance(prompt, str):
        return prompt
    msgs = [{"role": m.role, "content": m.content} for m in prompt]
    return msgs[0]["content"] if len(msgs) == 1 and msgs[0]["role"] == "user" else msgs


def run(cfg: PairsConfig) -> dict[str, Any]:
    from lmlab.eval.compare import answer_prompts, load_prompts
    from lmlab.eval.reward_analysis import load_scorer
    from lmlab.generate import DecodingConfig
    from lmlab.progress import log
    from lmlab.runs import atomic_write_json, atomic_write_text

    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out={cfg.out} is a file; give a folder")
    prompts = load_prompts(cfg.prompts, cfg.split, cfg.n)
    decoding = DecodingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k,
                              top_p=cfg.top_p, seed=cfg.seed, n=cfg.samples)
    log(f"data pairs: {cfg.samples} answers to each of {len(prompts)} prompts from {cfg.model}")
    answers = answer_prompts(cfg.model, prompts, decoding, template=cfg.template, system=cfg.system,
                             device=cfg.device, batch_size=cfg.batch_size)  # [prompt][sample]
    scorer = load_scorer(cfg.judge, batch_size=cfg.batch_size, max_length=cfg.max_length, device=cfg.device)
    flat_prompts = [p for p in prompts for _ in range(cfg.samples)]
    flat = list(map(float, scorer(flat_prompts, [a for outs in answers for a in outs])))
    rows, gaps, tied = [], [], 0
    for i, (prompt, outs) in enumerate(zip(prompts, answers, strict=True)):
        scores = flat[i * cfg.samples:(i + 1) * cfg.samples]
        pick = best_and_worst(scores, cfg.min_gap)
        if pick is None:
            tied += 1
            continue
        b, w = pick
        gaps.append(scores[b] - scores[w])
        rows.append({"prompt": _prompt_json(prompt), "chosen": outs[b], "rejected": outs[w],
                     "chosen_score": scores[b], "rejected_score": scores[w]})
    if not rows:
        raise ConfigError(f"data pairs: every prompt's {cfg.samples} answers scored within min_gap={cfg.min_gap}; "
                          "raise temperature or samples, or lower min_gap")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "pairs.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    result = {"prompts": len(prompts), "pairs": len(rows), "dropped_ties": tied, "samples": cfg.samples,
              "judge": cfg.judge, "mean_score": sum(flat) / len(flat), "mean_gap": sum(gaps) / len(gaps),
              "mean_chosen": sum(r["chosen_score"] for r in rows) / len(rows),
              "mean_rejected": sum(r["rejected_score"] for r in rows) / len(rows), "file": str(out / "pairs.jsonl")}
    atomic_write_json(out / "result.json", result)
    log(f"data pairs: {len(rows)} pairs ({tied} prompts dropped: answers within {cfg.min_gap}), mean gap "
        f"{result['mean_gap']:.3f} → {out / 'pairs.jsonl'}")
    return result
