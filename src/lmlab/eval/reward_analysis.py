"""`lmlab eval reward`: what a reward model prefers, and whether it prefers it for the right reasons.

    lmlab eval reward model=runs/rm data=storyworld/prefs limit=500 out=runs/rm-analysis
    lmlab eval reward model=runs/rm-dpo data=dpo-en       # one split only: the pairs the RM run held out
    lmlab eval reward model=gold data=storyworld/prefs          # the storyworld gold judge as a baseline

It scores the chosen and the rejected response of held-out preference pairs and reports

- accuracy: the fraction of pairs where r(chosen) > r(rejected) (a tie counts one half, so a
  constant scorer gets exactly 0.5, not 0 or 1);
- the two reward distributions (mean, sample standard deviation) and Welch's t-test between them
  (scipy.stats.ttest_ind, equal_var=False: the two spreads need not be equal);
- length bias, the classic reward-hacking route (Singhal et al. 2023, "A Long Way to Go"): the
  Pearson correlation of reward with word count over all responses, the mean words of chosen vs
  rejected, and how often the longer response of a pair gets the higher reward;
- readability (Flesch–Kincaid grade, textstat) of chosen vs rejected;
- the words the model favours: TF-IDF keywords of the top-quartile-reward responses against the
  training responses (scikit-learn), i.e. what the high-reward texts say more than usual.

Plots: reward histograms with KDE (scipy.stats.gaussian_kde) and reward vs length. The statistics
are pure functions of arrays of rewards and texts (`analyze`), tested against hand computation.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmlab.config import opt
from lmlab.errors import ConfigError

Scorer = Callable[[list[Any], list[str]], list[float]]
"""Scores responses: (prompts as message lists, responses) → one reward each."""


@dataclass
class RewardAnalysisConfig:
    """`lmlab eval reward`: score held-out preference pairs with a reward model and analyse the rewards."""

    model: str = opt(help="reward model: a `train rm` run folder, a sequence-classification model folder, or 'gold' (storyworld judge)")
    data: str = opt("storyworld/prefs", "preference pairs (prompt, chosen, rejected)")
    split: str = opt("auto", "pairs to score: a split name, or auto = the set's validation/test split, else the pairs the RM run held out")
    columns: dict[str, str] = opt({}, "column mapping for the preference data")
    limit: int | None = opt(500, "score at most this many pairs")
    train_data: str | None = opt(None, "responses the TF-IDF keywords are contrasted with; default: the RM's training data")
    top_k: int = opt(15, "keywords to report")
    batch_size: int = opt(16, "pairs per forward pass")
    max_length: int = opt(512, "tokens per prompt + response (longer ones are truncated from the left)")
    template: str = opt("auto", "chat template used to render prompt + response (the RM's own by default)")
    out: str | None = opt(None, "folder for metrics.json, scores.jsonl and the plots; default runs/eval-reward")
    device: str = opt("auto", "auto, cpu, cuda, mps")

    def validate(self) -> list[str]:
        problems = []
        if self.limit is not None and self.limit < 2:
            problems.append(f"limit must be >= 2 (a t-test needs two pairs), got {self.limit}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        return problems


# -- statistics (pure) -------------------------------------------------------------------------

def word_count(text: str) -> int:
    return len(text.split())


def pairwise_accuracy(chosen: Sequence[float], rejected: Sequence[float]) -> float:
    """Fraction of pairs with r_chosen > r_rejected; ties count one half."""
    c, r = np.asarray(chosen, float), np.asarray(rejected, float)
    if len(c) != len(r) or len(c) == 0:
        raise ValueError(f"need equally many chosen and rejected rewards, got {len(c)} and {len(r)}")
    return float(np.mean((c > r) + 0.5 * (c == r)))


def welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Welch's t statistic and two-sided p-value (NaN when a sample has no spread and both are constant)."""
    from scipy.stats import ttest_ind

    if len(a) < 2 or len(b) < 2:
        return float("nan"), float("nan")
    res = ttest_ind(np.asarray(a, float), np.asarray(b, float), equal_var=False)
    return float(res.statistic), float(res.pvalue)


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson r; NaN when either variable is constant (r is undefined there)."""
    from scipy.stats import pearsonr

    xa, ya = np.asarray(x, float), np.asarray(y, float)
    if len(xa) < 2 or np.ptp(xa) == 0 or np.ptp(ya) == 0:
        return float("nan")
    return float(pearsonr(xa, ya).statistic)


@functools.cache
def _has_cmudict() -> bool:
    try:
        import nltk

        nltk.data.find("corpora/cmudict")
        return True
    except (ImportError, LookupError):
        return False


def fk_grade_one(text: str) -> float:
    """Flesch–Kincaid grade of one text: 0.39·words/sentences + 11.8·syllables/words − 15.59 (Kincaid et al. 1975).

    textstat counts English syllables with the CMU dictionary, which NLTK downloads on first use;
    offline (no network, no cmudict) we keep textstat's word and sentence counts and count syllables
    with pyphen hyphenation, which is textstat's own fallback for words missing from the dictionary.
    """
    import textstat

    if _has_cmudict():
        return float(textstat.flesch_kincaid_grade(text))
    import pyphen
    from textstat.backend.selections._list_words import list_words

    words = list_words(text, lowercase=True)
    if not words:
        return float("nan")
    hyph = pyphen.Pyphen(lang="en_US")
    syllables = sum(len(hyph.positions(w)) + 1 for w in words)
    sentences = max(1, textstat.sentence_count(text))
    return 0.39 * len(words) / sentences + 11.8 * syllables / len(words) - 15.59


def fk_grade(texts: Sequence[str]) -> float:
    """Mean Flesch–Kincaid grade level of the non-empty texts."""
    grades = [g for g in (fk_grade_one(t) for t in texts if t.strip()) if np.isfinite(g)]
    return float(np.mean(grades)) if grades else float("nan")


def keywords(favoured: Sequence[str], reference: Sequence[str], top_k: int = 15) -> list[tuple[str, float]]:
    """Words that high-reward texts use more than the reference texts, by mean TF-IDF difference.

    One vectorizer is fitted on both sets so the IDF is shared; a word's score is its mean TF-IDF
    weight in `favoured` minus its mean weight in `reference`; the top `top_k` positive ones.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    fav = [t for t in favoured if t.strip()]
    ref = [t for t in reference if t.strip()]
    if not fav or not ref:
        return []
    vec = TfidfVectorizer(stop_words="english", token_pattern=r"(?u)\b[^\W\d_][^\W\d_]+\b")
    try:
        matrix = vec.fit_transform(fav + ref)  # (N_fav + N_ref, V)
    except ValueError:  # only stop words
        return []
    diff = np.asarray(matrix[: len(fav)].mean(axis=0)).ravel() - np.asarray(matrix[len(fav):].mean(axis=0)).ravel()
    order = np.argsort(-diff, kind="stable")[:top_k]
    terms = vec.get_feature_names_out()
    return [(str(terms[i]), round(float(diff[i]), 5)) for i in order if diff[i] > 0]


def analyze(chosen: Sequence[float], rejected: Sequence[float], chosen_texts: Sequence[str],
            rejected_texts: Sequence[str], reference_texts: Sequence[str] | None = None, top_k: int = 15) -> dict[str, Any]:
    """Every statistic of the module docstring from rewards and texts (pure: no model involved)."""
    c, r = np.asarray(chosen, float), np.asarray(rejected, float)
    if not (len(c) == len(r) == len(chosen_texts) == len(rejected_texts)):
        raise ValueError("chosen/rejected rewards and texts must have the same length")
    t_stat, p_value = welch(c, r)
    c_words = np.array([word_count(t) for t in chosen_texts], float)
    r_words = np.array([word_count(t) for t in rejected_texts], float)
    rewards = np.concatenate([c, r])
    texts = list(chosen_texts) + list(rejected_texts)
    words = np.concatenate([c_words, r_words])
    # longer response of a pair rewarded higher (pairs of equal length are left out)
    differ = c_words != r_words
    longer_c = c_words > r_words
    longer_wins = np.where(longer_c, c > r, r > c)[differ]
    cutoff = np.quantile(rewards, 0.75)
    favoured = [t for t, x in zip(texts, rewards, strict=True) if x >= cutoff]
    return {
        "pairs": len(c),
        "accuracy": pairwise_accuracy(c, r),
        "chosen_mean": float(c.mean()), "rejected_mean": float(r.mean()),
        "chosen_std": float(c.std(ddof=1)) if len(c) > 1 else 0.0,
        "rejected_std": float(r.std(ddof=1)) if len(r) > 1 else 0.0,
        "margin_mean": float((c - r).mean()),
        "t_stat": t_stat, "p_value": p_value,
        "length_corr": pearson(rewards, words),
        "chosen_words": float(c_words.mean()), "rejected_words": float(r_words.mean()),
        "longer_preferred": float(longer_wins.mean()) if len(longer_wins) else float("nan"),
        "chosen_fk_grade": fk_grade(chosen_texts), "rejected_fk_grade": fk_grade(rejected_texts),
        "favoured_cutoff": float(cutoff),
        "keywords": keywords(favoured, reference_texts if reference_texts is not None else texts, top_k),
    }


# -- scoring -----------------------------------------------------------------------------------

def prompt_text(prompt: Any) -> str:
    """The last user turn of a message list (what the gold judge reads as the task)."""
    if isinstance(prompt, str):
        return prompt
    users = [m.content for m in prompt if getattr(m, "role", "") == "user"]
    return users[-1] if users else (prompt[-1].content if prompt else "")


def gold_scorer() -> Scorer:
    from lmlab.data.storyworld import gold_reward

    return lambda prompts, responses: [float(gold_reward(prompt_text(p), r)) for p, r in zip(prompts, responses, strict=True)]


def model_scorer(spec: str, *, batch_size: int = 16, max_length: int = 512, template: str = "auto",
                 device: str = "auto") -> Scorer:
    """A sequence-classification reward model as a Scorer (one scalar logit per response)."""
    import torch

    from lmlab.data.preference import encode_responses
    from lmlab.devices import resolve_device
    from lmlab.models import load_model

    model, tokenizer = load_model(spec, kind="sequence-classification", device=None)
    dev = resolve_device(device)
    model.to(dev).eval()

    @torch.no_grad()
    def score(prompts: list[Any], responses: list[str]) -> list[float]:
        out: list[float] = []
        for i in range(0, len(responses), batch_size):
            batch = encode_responses(tokenizer, prompts[i:i + batch_size], responses[i:i + batch_size], max_length, template)
            logits = model(input_ids=batch["input_ids"].to(dev), attention_mask=batch["attention_mask"].to(dev)).logits
            out += logits[:, 0].float().cpu().tolist()  # (B, 1) → B rewards
        return out

    return score


def load_scorer(spec: str, **kw: Any) -> Scorer:
    return gold_scorer() if spec == "gold" else model_scorer(spec, **kw)


def run_config_of(model: str) -> dict[str, Any]:
    """The config.yaml of a `train rm` run folder (given as the run or its final/), or {}."""
    import yaml

    for folder in (Path(model), Path(model).parent):
        cfg = folder / "config.yaml"
        if cfg.exists():
            data = yaml.safe_load(cfg.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
    return {}


def held_out_pairs(cfg: RewardAnalysisConfig, rm_cfg: dict[str, Any]) -> tuple[list[Any], str]:
    """The pairs to score and where they came from.

    `split=auto` avoids scoring pairs the RM trained on: a named set's validation/test split when
    it has one; otherwise, for an RM run trained on this same data, exactly the pairs that run held
    out (same deterministic hash split, val_fraction and seed); otherwise all pairs, said so.
    """
    from lmlab.data.loaders import heldout_split, load_records
    from lmlab.data.split import split_train_val

    columns = cfg.columns or None
    if cfg.split != "auto":
        return load_records(cfg.data, "preference", columns=columns, split=cfg.split, limit=cfg.limit), cfg.split
    named = heldout_split(cfg.data)
    if named != "train":
        return load_records(cfg.data, "preference", columns=columns, split=named, limit=cfg.limit), named
    if rm_cfg.get("data") == cfg.data and not rm_cfg.get("eval_data"):
        frac, seed = float(rm_cfg.get("val_fraction", 0.05)), int(rm_cfg.get("seed", 0))
        records = load_records(cfg.data, "preference", columns=rm_cfg.get("columns") or columns, limit=rm_cfg.get("limit"))
        _, val = split_train_val(records, frac, seed=seed)
        return val[: cfg.limit] if cfg.limit else val, f"held out by the RM run (val_fraction={frac}, seed={seed})"
    records = load_records(cfg.data, "preference", columns=columns, split="train", limit=cfg.limit)
    return records, "train (the set has no held-out split; the RM may have trained on these pairs)"


def write_plots(stats_in: dict[str, Sequence], out: Path, title: str) -> list[Path]:
    from lmlab.plots import histograms, scatter

    c, r = stats_in["chosen"], stats_in["rejected"]
    cw = [word_count(t) for t in stats_in["chosen_texts"]]
    rw = [word_count(t) for t in stats_in["rejected_texts"]]
    return [
        histograms(c, r, out / "reward_hist.png", title=f"{title}: reward of chosen vs rejected"),
        scatter({"chosen": (cw, c), "rejected": (rw, r)}, out / "reward_vs_length.png",
                title=f"{title}: reward vs length", xlabel="response length (words)", ylabel="reward"),
    ]


def run(cfg: RewardAnalysisConfig) -> dict[str, Any]:
    """Score `cfg.data` with `cfg.model`, write metrics.json, scores.jsonl and plots to `cfg.out`."""
    import json

    from lmlab.data.loaders import load_records
    from lmlab.progress import log
    from lmlab.runs import atomic_write_json, atomic_write_text

    out = Path(cfg.out or "runs/eval-reward")
    rm_cfg = run_config_of(cfg.model) if cfg.model != "gold" else {}
    records, split = held_out_pairs(cfg, rm_cfg)
    if len(records) < 2:
        raise ConfigError(f"data={cfg.data} split={split}: {len(records)} preference pair(s); need at least 2")
    scorer = load_scorer(cfg.model, batch_size=cfg.batch_size, max_length=cfg.max_length, template=cfg.template, device=cfg.device)
    prompts = [rec.prompt for rec in records]
    chosen_texts = [rec.chosen for rec in records]
    rejected_texts = [rec.rejected for rec in records]
    log(f"eval reward: scoring {len(records)} pairs with {cfg.model}")
    chosen = scorer(prompts, chosen_texts)
    rejected = scorer(prompts, rejected_texts)
    reference = None
    train_spec = cfg.train_data or rm_cfg.get("data")
    if train_spec:
        refs = load_records(train_spec, "preference", columns=cfg.columns or None, split="train", limit=2000)
        reference = [x for rec in refs for x in (rec.chosen, rec.rejected)]
    metrics = analyze(chosen, rejected, chosen_texts, rejected_texts, reference, cfg.top_k)
    metrics.update({"model": cfg.model, "data": cfg.data, "split": split,
                    "keywords_vs": train_spec or "all scored responses"})
    write_plots({"chosen": chosen, "rejected": rejected, "chosen_texts": chosen_texts, "rejected_texts": rejected_texts},
                out, Path(cfg.model).name or cfg.model)
    rows = [{"prompt": prompt_text(p), "chosen": c_t, "rejected": r_t, "r_chosen": c, "r_rejected": r}
            for p, c_t, r_t, c, r in zip(prompts, chosen_texts, rejected_texts, chosen, rejected, strict=True)]
    atomic_write_text(out / "scores.jsonl", "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in rows))
    atomic_write_json(out / "metrics.json", metrics)
    print_table(metrics)
    return metrics


def print_table(metrics: dict[str, Any]) -> str:
    """The headline numbers on stdout (the command's result); returns them as Markdown."""
    from lmlab.eval.common import print_table as table

    keys = ("pairs", "accuracy", "chosen_mean", "rejected_mean", "chosen_std", "rejected_std", "t_stat", "p_value",
            "length_corr", "chosen_words", "rejected_words", "longer_preferred", "chosen_fk_grade", "rejected_fk_grade")
    rows: list[list[Any]] = [[k, metrics.get(k)] for k in keys]
    rows.append(["favoured words", ", ".join(w for w, _ in metrics.get("keywords", [])[:10])])
    return table(f"reward analysis: {metrics.get('model', '')} on {metrics.get('data', '')}", ["metric", "value"], rows)
