"""`lmlab ablate`: a grid of fine-tuning runs (epochs × data fraction × any stage key), one table.

    lmlab ablate model=runs/sft-storyworld/pt data=storyworld/instruct \\
        grid='{epochs: [1, 2, 4], data_fraction: [0.25, 1.0]}' out=runs/ablation
    lmlab ablate stage=pt model=runs/tinystories/pt data=tinystories@validation \\
        grid='{epochs: [1, 2], data_fraction: [0.5, 1.0]}' ppl_texts=5 out=runs/ablation-pt

`stage=sft` (default) crosses `train sft` runs on chat data; `stage=pt` crosses `train pt` runs,
plain-text fine-tuning of a pretrained model (continued pretraining on your own texts). For pt the
extra table `ppl_table.md` has one row per held-out text (the first `ppl_texts`) and one column
per cell plus the model *before* fine-tuning: the per-text PPL before/after table of a course report.

Every cell is an ordinary `train sft` run in `<out>/<cell>/` with the base keys plus that cell's
values, so each can be inspected, resumed (`--resume`) or reused; finished cells are skipped.
All cells share the held-out set (same data, same `seed`, same split) and the data fractions are
nested (0.25 ⊂ 0.5 ⊂ 1), so differences come from the knob, not from a different draw.

The table (`table.md`, `table.csv`, `metrics.json` in `out`) has, per cell: held-out PPL (of the
weights in final/) on the answer tokens (comparable across `train_on_prompt`) and on all tokens, the final train loss, steps, time, a greedy sample for the first `samples`
prompt (or the first held-out prompt), and for storyworld data the gold judge's
constraint-satisfaction rate on `judge_prompts` held-out prompts.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lmlab.config import closest, opt
from lmlab.errors import ConfigError
from lmlab.progress import log
from lmlab.runs import atomic_write_json, atomic_write_text
from lmlab.train.config import PretrainConfig, SFTConfig

STAGES = {"sft": SFTConfig, "pt": PretrainConfig}


@dataclass
class AblationConfig(SFTConfig):
    """`lmlab ablate`: SFT keys shared by all cells, plus `grid` (key → list of values) to cross."""

    stage: Literal["sft", "pt"] = opt("sft", "what each cell runs: sft (chat data) or pt (plain-text fine-tuning of `model`)")
    grid: dict[str, Any] = opt({"epochs": [1, 2], "data_fraction": [0.5, 1.0]},
                               "stage keys → lists of values; every combination is one run (a cell)")
    ppl_texts: int = opt(5, "stage=pt: held-out texts in the per-text PPL before/after table")
    judge_prompts: int = opt(0, "storyworld data: score greedy replies to this many held-out prompts with the gold judge (0 = off)")
    max_new_tokens: int = opt(128, "tokens generated per sample / judged reply")

    def validate(self) -> list[str]:
        problems = super().validate()
        names = {f.name for f in dataclasses.fields(STAGES[self.stage])} - {"out"}
        if not self.grid:
            problems.append("grid is empty; e.g. grid='{epochs: [1, 2], data_fraction: [0.5, 1.0]}'")
        for key, values in self.grid.items():
            if key not in names:
                hint = closest(key, names)
                problems.append(f"grid: unknown {self.stage.upper()} key '{key}'" + (f"; did you mean '{hint}'?" if hint else ""))
            elif not isinstance(values, list) or not values:
                problems.append(f"grid.{key} must be a non-empty list of values, got {values!r}")
        if "epochs" in self.grid and self.max_steps is not None:
            problems.append("grid varies epochs but max_steps is set (it overrides epochs); remove max_steps")
        return problems


def cells(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination, in the grid's key order (the first key varies slowest)."""
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))]


def cell_name(cell: dict[str, Any]) -> str:
    return "_".join(f"{k}{v}" for k, v in cell.items()).replace("/", "-").replace(" ", "")


def base_config(cfg: AblationConfig) -> SFTConfig | PretrainConfig:
    """The stage config every cell starts from: the ablation's keys the stage has."""
    klass = STAGES[cfg.stage]
    mine = {f.name for f in dataclasses.fields(cfg)}
    return klass(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(klass) if f.name in mine})


def held_out_prompts(cfg: SFTConfig, n: int) -> list[str]:
    """The first user turns of the held-out conversations (same split the SFT runs use)."""
    from lmlab.train.sft import split_chat_records

    val = split_chat_records(cfg)[1]
    prompts = []
    for rec in val:
        user = next((m.content for m in rec.messages if m.role == "user"), None)
        if user is not None:
            prompts.append(user)
        if len(prompts) >= n:
            break
    return prompts


def judge_rate(run_dir: Path, cfg: SFTConfig, prompts: list[str], max_new_tokens: int) -> float:
    """Mean gold-judge constraint rate of greedy replies from run_dir/final."""
    from lmlab.data.chat import render_prompt
    from lmlab.data.storyworld.judge import judge
    from lmlab.generate import DecodingConfig, generate
    from lmlab.models.load import load_model

    model, tok = load_model(str(run_dir))
    model.eval()
    rendered = [render_prompt(tok, p, template=cfg.template, system=cfg.system) for p in prompts]
    outs = generate(model, tok, rendered, DecodingConfig(max_new_tokens=max_new_tokens, temperature=0.0))
    rates = [judge(p, o[0]).constraint_rate for p, o in zip(prompts, outs, strict=True)]
    return sum(rates) / max(len(rates), 1)


def held_out_texts(cfg: PretrainConfig) -> list[str]:
    """The held-out texts of a pt cell (the same split every cell and `before` are scored on)."""
    from lmlab.train.pretrain import load_split_texts

    return load_split_texts(cfg)[1]


def text_ppl(model_spec: str, texts: list[str], max_length: int) -> list[float]:
    """Per-text perplexity of `texts` under a model (sliding windows of max_length tokens)."""
    from lmlab.eval.perplexity import score_texts
    from lmlab.models.load import load_model

    model, tok = load_model(model_spec)
    model.eval()
    return [s.ppl for s in score_texts(model, tok, texts, max_length=max_length, stride=max(1, max_length // 2))]


def ppl_table(texts: list[str], before: list[float], after: dict[str, list[float]]) -> str:
    """Rows = held-out texts, columns = the model before fine-tuning and each cell, then the mean."""
    from lmlab.eval.common import markdown_table

    header = ["held-out text", "before", *after]
    rows = [[_preview(t), b, *(after[c][i] for c in after)] for i, (t, b) in enumerate(zip(texts, before, strict=True))]
    mean = ["mean of per-text ppl", sum(before) / len(before), *(sum(v) / len(v) for v in after.values())]
    return "### Per-text perplexity before / after fine-tuning\n\n" + markdown_table(header, [*rows, mean])


def _preview(text: str, width: int = 60) -> str:
    flat = " ".join(text.split())
    return (flat if len(flat) <= width else flat[: width - 1] + "…").replace("|", "\\|")


def run(cfg: AblationConfig, *, resume: bool = False, force: bool = False) -> dict[str, Any]:
    """Run every cell (skipping finished ones) and write the table; returns {"rows": [...], ...}."""
    from lmlab.train import sft

    out = Path(cfg.out or "runs/ablation")
    base = base_config(cfg)
    if cfg.stage == "pt":
        return _run_pt(cfg, base, out, resume=resume, force=force)
    prompt = cfg.samples[:1] or held_out_prompts(base, 1)
    judged = held_out_prompts(base, cfg.judge_prompts) if cfg.judge_prompts else []
    if judged and not str(cfg.data).startswith("storyworld/"):
        raise ConfigError(f"judge_prompts needs storyworld data (the gold judge knows its prompts), got data={cfg.data}")
    rows = []
    grid = cells(cfg.grid)
    for i, cell in enumerate(grid):
        name = cell_name(cell)
        log(f"ablation cell {i + 1}/{len(grid)}: {name}")
        cell_cfg = dataclasses.replace(base, **cell, out=str(out / name), samples=prompt)
        res = sft.run(cell_cfg, resume=resume, force=force)
        m = res.metrics
        row: dict[str, Any] = {
            **cell, "val_ppl": m.get("val_ppl"), "val_ppl_all_tokens": m.get("val_ppl_all_tokens"),
            "val_loss": m.get("val_loss"), "train_loss": m.get("train_loss"),
            "steps": m.get("steps"), "train_examples": m.get("train_examples"), "elapsed_s": m.get("elapsed_s"),
        }
        if judged:
            row["constraint_rate"] = judge_rate(res.path, cell_cfg, judged, cfg.max_new_tokens)
        samples = m.get("samples") or []
        row["sample"] = samples[0]["response"] if samples else ""
        rows.append(row)
    summary = {"grid": cfg.grid, "sample_prompt": prompt[0] if prompt else None,
               "judge_prompts": len(judged), "rows": rows}
    atomic_write_json(out / "metrics.json", summary)
    atomic_write_text(out / "table.md", to_markdown(rows, prompt[0] if prompt else ""))
    atomic_write_text(out / "table.csv", to_csv(rows))
    log(f"ablation table: {out / 'table.md'}")
    return summary


def _run_pt(cfg: AblationConfig, base: PretrainConfig, out: Path, *, resume: bool, force: bool) -> dict[str, Any]:
    """stage=pt: train pt cells from `cfg.model`, then the per-text PPL before/after table."""
    from lmlab.train import pretrain

    texts = held_out_texts(base)[: cfg.ppl_texts]
    prompt = cfg.samples[:1] or [" ".join(texts[0].split()[:5])] if texts else cfg.samples[:1]
    rows, after = [], {}
    grid = cells(cfg.grid)
    for i, cell in enumerate(grid):
        name = cell_name(cell)
        log(f"ablation cell {i + 1}/{len(grid)}: {name}")
        res = pretrain.run(dataclasses.replace(base, **cell, out=str(out / name), samples=prompt), resume=resume, force=force)
        m = res.metrics
        samples = m.get("samples") or []
        rows.append({**cell, "val_ppl": m.get("val_ppl"), "val_loss": m.get("val_loss"), "train_loss": m.get("train_loss"),
                     "steps": m.get("steps"), "train_texts": m.get("train_texts"), "elapsed_s": m.get("elapsed_s"),
                     "sample": samples[0]["completion"] if samples else ""})
        if texts:
            after[name] = text_ppl(str(res.path), texts, cfg.max_length)
    before = text_ppl(cfg.model, texts, cfg.max_length) if texts else []
    summary = {"stage": "pt", "grid": cfg.grid, "sample_prompt": prompt[0] if prompt else None, "rows": rows,
               "texts": texts, "ppl_before": before, "ppl_after": after}
    atomic_write_json(out / "metrics.json", summary)
    atomic_write_text(out / "table.md", to_markdown(rows, prompt[0] if prompt else "", {"val_ppl": "val ppl (all tokens)"}))
    atomic_write_text(out / "table.csv", to_csv(rows))
    if texts:
        atomic_write_text(out / "ppl_table.md", ppl_table(texts, before, after))
    log(f"ablation tables: {out / 'table.md'}, {out / 'ppl_table.md'}")
    return summary


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


# Column headers that say which tokens a number is over (masked and unmasked SFT differ there).
HEADERS = {"val_ppl": "val ppl (answer tokens)", "val_ppl_all_tokens": "val ppl (all tokens)",
           "val_loss": "val loss (answer tokens)"}


def to_markdown(rows: list[dict[str, Any]], prompt: str, headers: dict[str, str] = HEADERS) -> str:
    cols = list(rows[0])
    lines = [f"Sample prompt: {prompt!r}", "", "| " + " | ".join(headers.get(c, c) for c in cols) + " |",
             "|" + "---|" * len(cols)]
    for r in rows:
        cells_ = [_fmt(r[c]).replace("|", "\\|").replace("\n", " ")[:160] for c in cols]
        lines.append("| " + " | ".join(cells_) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    for r in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()})
    return buf.getvalue()
