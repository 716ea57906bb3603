"""`lmlab report RUN_DIR`: a Markdown + self-contained HTML report of a run, from its files only.

    lmlab report runs/quickstart          # a recipe run: one section per stage folder
    lmlab report runs/quickstart/sft      # a single stage

The report reads only what stages leave behind (config.yaml, metrics.jsonl, result.json,
samples.jsonl, an eval command's metrics.json and samples.md, PNGs), so any run can be reported
later, on another machine, and training code never calls into here. It writes, inside RUN_DIR:

    report.md, report.html   (the HTML inlines every image as base64: one file to mail or upload)
    plots/                   loss curves per stage, all stages together, final-metric bars
    metrics.csv              every number in long form: stage, source (train/val/result/eval), step, metric, value
    metrics.xlsx             a summary sheet plus one sheet of training rows per stage
"""
from __future__ import annotations

import base64
import csv
import dataclasses
import html
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lmlab.config import opt
from lmlab.errors import LmlabError
from lmlab.runs import RunDir, atomic_write_bytes, atomic_write_text, read_jsonl

ARTIFACTS = ("config.yaml", "metrics.jsonl", "result.json", "metrics.json", "samples.jsonl")
# The settings shown in a stage's summary, in this order, when its config has them.
KEY_SETTINGS = (
    "model", "data", "eval_data", "prompts", "tokenizer", "tuning", "lora.rank", "lora.alpha", "loss", "beta",
    "margin", "judge", "max_steps", "epochs", "batch_size", "grad_accum", "max_length", "lr", "schedule",
    "warmup_steps", "precision", "seed", "limit", "n", "temperature", "max_new_tokens", "vocab_size", "kind",
)
# What the overview shows for a stage, most telling first (matched on the last part of a flattened key).
HEADLINE_KEYS = ("eval_accuracy", "accuracy", "val_ppl", "win_rate", "gold_win_rate", "gold_mean", "ppl", "bleu",
                 "rouge_l", "chars_per_token")
# Logged metrics besides the loss that get their own curves (reward models, preference stages).
CURVE_KEYS = ("accuracy", "margin", "reward_chosen", "reward_rejected", "kl", "reward")
SAMPLE_TEXT_KEYS = ("completion", "response", "text", "output", "generation", "sample")
MAX_SAMPLES = 5
MAX_FLAT_ROWS = 60


@dataclass
class ReportConfig:
    """`lmlab report RUN_DIR`: report.md, report.html, plots/, metrics.csv/xlsx from a run folder's files."""

    run_dir: str = opt(help="a recipe run folder (runs/NAME, with stage subfolders) or one stage folder")
    title: str | None = opt(None, "report title; default: the folder name")
    samples: int = opt(MAX_SAMPLES, "samples shown per stage")


# -- reading -----------------------------------------------------------------------------------

@dataclass
class Stage:
    """What one stage folder holds (all optional: a stage that failed early still gets a section)."""

    name: str
    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    samples_md: str = ""
    images: list[Path] = field(default_factory=list)
    rollouts: list[dict[str, Any]] = field(default_factory=list)
    """online RL stages: every logged rollout (rollouts.jsonl) with its reward"""

    @property
    def trained(self) -> bool:
        return any("loss" in r for r in self.rows)

    def result_only(self) -> dict[str, Any]:
        """result.json without what metrics.json already says (a recipe copies an eval's metrics there)."""
        shown = flatten(self.eval)
        return {k: v for k, v in flatten(self.result).items() if k not in shown or shown[k] != v}


def is_stage(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in ARTIFACTS)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LmlabError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); fix or delete the file") from None
    return data if isinstance(data, dict) else {"value": data}


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise LmlabError(f"{path}: invalid YAML ({exc})") from None
    return data if isinstance(data, dict) else {}


def read_stage(path: Path, name: str | None = None) -> Stage:
    run = RunDir(path)
    images = sorted(p for p in path.glob("*.png") if p.stat().st_size > 0)
    samples_md = path / "samples.md"
    return Stage(
        name=name or path.name, path=path, config=_read_yaml(run.config_path), rows=read_jsonl(run.metrics_path),
        result=_read_json(run.result_path), eval=_read_json(path / "metrics.json"),
        samples=read_jsonl(path / "samples.jsonl"), images=images,
        samples_md=samples_md.read_text(encoding="utf-8") if samples_md.exists() else "",
        rollouts=read_jsonl(path / "rollouts.jsonl"),
    )


def _started(path: Path) -> float:
    """When a stage began: the oldest artifact's mtime (stages run in order, so this sorts them)."""
    times = [(path / n).stat().st_mtime for n in ARTIFACTS if (path / n).exists()]
    return min(times) if times else path.stat().st_mtime


def find_stages(run_dir: Path) -> list[Stage]:
    """The stages of a recipe run (subfolders with artifacts, in the order they ran) or the folder itself."""
    if not run_dir.is_dir():
        raise LmlabError(f"{run_dir}: no such folder; give a run folder such as runs/quickstart or runs/quickstart/sft")
    if is_stage(run_dir):
        return [read_stage(run_dir)]
    folders = sorted((p for p in run_dir.iterdir() if is_stage(p)), key=_started)
    if not folders:  # a course (a run of several recipes): every part's stages, named PART.STAGE
        parts = [p for p in sorted(run_dir.iterdir()) if p.is_dir() and any(is_stage(q) for q in p.iterdir())]
        folders = sorted((q for p in parts for q in p.iterdir() if is_stage(q)), key=_started)
        if folders:
            return [dataclasses.replace(read_stage(q), name=f"{q.parent.name}.{q.name}") for q in folders]
    if not folders:
        raise LmlabError(
            f"{run_dir}: no stage folders found (a stage folder holds one of {', '.join(ARTIFACTS)}); "
            "give a recipe run folder or one stage's folder"
        )
    return [read_stage(p) for p in folders]


# -- numbers -----------------------------------------------------------------------------------

def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` → `{"a.b": 1}`; lists of scalars are kept as one value."""
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    out[prefix[:-1]] = obj
    return out


def numeric(obj: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a flattened mapping (booleans excluded)."""
    return {k: float(v) for k, v in flatten(obj).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}


def fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.3e}"
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):  # e.g. keywords [[word, score], ...] → "word, word, ..."
        text = ", ".join(str(v[0]) if isinstance(v, (list, tuple)) and v else str(v) for v in value)
    else:
        text = str(value)
    return text if len(text) <= 120 else text[:117] + "..."


def headline_metric(numbers: dict[str, float]) -> tuple[str, float] | None:
    """The number a stage is judged by, for the overview: the first of HEADLINE_KEYS it has."""
    for key in HEADLINE_KEYS:
        for name, value in numbers.items():
            if name == key or name.endswith("." + key):
                return name, value
    return next(((k, v) for k, v in numbers.items() if "loss" not in k and k not in ("steps", "step")), None)


def samples_headline(config: dict[str, Any]) -> str | None:
    """A sampling stage (generate) is described by what it was asked and how it decoded:
    `prompt 'Once upon' · temperature 0.8 · top_k 50`, not by a count such as 'prompts = 1'."""
    if "temperature" not in config or not (config.get("prompt") or config.get("prompts")):
        return None
    what = f"prompts {config['prompts']}" if config.get("prompts") else f"prompt {fmt(config['prompt'])!r}"
    parts = [what, f"temperature {fmt(config['temperature'])}"]
    for key in ("top_k", "top_p", "beams", "repetition_penalty"):
        value = config.get(key)
        if value not in (None, 0, 1, 1.0):
            parts.append(f"{key} {fmt(value)}")
    return " · ".join(parts)


def key_settings(config: dict[str, Any]) -> list[tuple[str, str]]:
    flat = flatten(config)
    tuning = flat.get("tuning")
    rows = []
    for key in KEY_SETTINGS:
        if key.startswith("lora.") and tuning not in ("lora", "qlora"):
            continue
        value = flat.get(key)
        if value is not None and value != [] and value != {}:
            rows.append((key, fmt(value)))
    return rows


def final_metrics(stage: Stage) -> dict[str, Any]:
    """result.json, plus the last logged value of each training metric it does not already hold."""
    out: dict[str, Any] = {}
    for row in stage.rows:
        split = row.get("split", "train")
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                out[f"last {split} {key}"] = value
    if stage.rows:
        out["last step"] = stage.rows[-1].get("step")
    out.update(stage.result_only())
    return out


# -- document: one list of blocks, rendered to Markdown and HTML -------------------------------

@dataclass
class Block:
    kind: str  # h1 h2 h3 p table img pre
    text: str = ""
    rows: list[list[str]] = field(default_factory=list)  # table: first row is the header
    path: Path | None = None


def _md(blocks: list[Block], root: Path) -> str:
    out: list[str] = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append("#" * int(b.kind[1]) + " " + b.text)
        elif b.kind == "p":
            out.append(b.text)
        elif b.kind == "pre":
            out.append("```\n" + b.text + "\n```")
        elif b.kind == "table":
            def cell(s: str) -> str:
                return s.replace("|", "\\|").replace("\n", "<br>")

            head, *body = b.rows
            lines = ["| " + " | ".join(map(cell, head)) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(map(cell, r)) + " |" for r in body]
            out.append("\n".join(lines))
        elif b.kind == "img" and b.path is not None:
            out.append(f"![{b.text}]({b.path.relative_to(root).as_posix()})")
    return "\n\n".join(out) + "\n"


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #446;padding-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#eef}td{white-space:pre-wrap}img{max-width:100%;border:1px solid #eee;margin:.5em 0}
pre{background:#f6f6f6;padding:.8em;overflow-x:auto;white-space:pre-wrap}figcaption{font-size:.85em;color:#555}"""


def _html(blocks: list[Block], title: str) -> str:
    esc = html.escape
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>{CSS}</style></head><body>"]
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append(f"<{b.kind}>{esc(b.text)}</{b.kind}>")
        elif b.kind == "p":
            out.append(f"<p>{esc(b.text)}</p>")
        elif b.kind == "pre":
            out.append(f"<pre>{esc(b.text)}</pre>")
        elif b.kind == "table":
            head, *body = b.rows
            rows = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in body)
            out.append("<table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in head) + f"</tr>{rows}</table>")
        elif b.kind == "img" and b.path is not None:
            data = base64.b64encode(b.path.read_bytes()).decode("ascii")
            out.append(f"<figure><img alt='{esc(b.text)}' src='data:image/png;base64,{data}'>"
                       f"<figcaption>{esc(b.text)}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out)


# -- building ----------------------------------------------------------------------------------

def _sample_rows(samples: list[dict[str, Any]], limit: int) -> list[list[str]]:
    rows = [["step", "prompt", "output"]]
    for s in samples[-limit:]:
        text = next((s[k] for k in SAMPLE_TEXT_KEYS if k in s), "")
        if isinstance(text, list):
            text = "\n---\n".join(map(str, text))
        rows.append([str(s.get("step", "")), str(s.get("prompt", "")), str(text)])
    return rows


def _top_rollout_rows(rollouts: list[dict[str, Any]], limit: int) -> list[list[str]]:
    """The highest-reward rollouts of an RL run: where reward hacking shows first."""
    scored = [r for r in rollouts if isinstance(r.get("reward"), (int, float))]
    rows = [["reward", "round", "prompt", "completion"]]
    for r in sorted(scored, key=lambda r: -float(r["reward"]))[:limit]:
        rows.append([f"{float(r['reward']):.3f}", str(r.get("round", "")), str(r.get("prompt", "")),
                     str(r.get("completion", ""))])
    return rows


def _scalars(row: dict[str, Any]) -> dict[str, float]:
    """A row's own numbers (not those of nested per-set / per-text breakdowns)."""
    return {k: float(v) for k, v in row.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}


def eval_tables(data: dict[str, Any]) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, Any]]:
    """Split an eval metrics.json into models × metrics tables and the remaining key/values.

    A table is `data["table"]` (commands that write one for reports), `data` itself when every
    value is a per-model mapping (eval ppl), or any key holding a mapping of mappings.
    """
    def is_table(obj: Any) -> bool:
        return isinstance(obj, dict) and bool(obj) and all(isinstance(v, dict) for v in obj.values()) \
            and any(_scalars(v) for v in obj.values())

    if isinstance(data.get("table"), dict):
        return {"models": data["table"]}, {k: v for k, v in data.items() if k != "table"}
    if is_table(data):
        return {"models": data}, {}
    tables = {k: v for k, v in data.items() if is_table(v)}
    return tables, {k: v for k, v in data.items() if k not in tables}


_CELL_SPLIT = re.compile(r"(?<!\\)\|")


def markdown_blocks(text: str, max_rows: int) -> list[Block]:
    """Blocks from a command's Markdown (tables, headings, text), so HTML shows real tables.

    Table cells are split on unescaped `|`; `<br>` becomes a newline (the renderers turn it back).
    """
    blocks: list[Block] = []
    table: list[list[str]] = []

    def flush() -> None:
        if table:
            head, *body = table
            blocks.append(Block("table", rows=[head, *body[:max_rows]]))
            if len(body) > max_rows:
                blocks.append(Block("p", f"({len(body) - max_rows} more rows in samples.md)"))
            table.clear()

    for line in text.splitlines():
        line = line.strip()
        if line.startswith("|") and line.endswith("|"):
            cells = [c.strip().replace("\\|", "|").replace("<br>", "\n") for c in _CELL_SPLIT.split(line[1:-1])]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):  # skip the |---| separator
                table.append(cells)
            continue
        flush()
        if line.startswith("#"):
            blocks.append(Block("h3", line.lstrip("#").strip()))
        elif line:
            blocks.append(Block("p", line))
    flush()
    return blocks


def is_bench(data: dict[str, Any]) -> bool:
    """An `eval bench` metrics.json: {task: {acc, chance, ..}} or {model: {task: {acc, chance, ..}}}."""
    def task(v: Any) -> bool:
        return isinstance(v, dict) and "acc" in v and "chance" in v

    return bool(data) and (all(task(v) for v in data.values())
                           or all(isinstance(v, dict) and v and all(task(t) for t in v.values()) for v in data.values()))


def _eval_table(stage: Stage, plots: Path) -> tuple[list[Block], Path | None]:
    """An eval command's metrics.json: models × metrics tables, then the other values as key/value rows.

    A benchmark stage shows its own table.md instead (one table, the models as columns, baselines
    beside them); its bench.png is among the stage's images.
    """
    # eval ppl (every model has per_text rows) also shows the table it printed: per sentence or per set
    is_ppl = bool(stage.eval) and all(isinstance(v, dict) and "per_text" in v for v in stage.eval.values())
    if (is_bench(stage.eval) or is_ppl) and (stage.path / "table.md").is_file():
        return markdown_blocks((stage.path / "table.md").read_text(encoding="utf-8"), max_rows=500), None
    if "grid" in stage.eval and "rows" in stage.eval:  # lmlab ablate: its cell table (+ per-text PPL before/after)
        tables = [stage.path / name for name in ("table.md", "ppl_table.md") if (stage.path / name).is_file()]
        return [b for t in tables for b in markdown_blocks(t.read_text(encoding="utf-8"), max_rows=500)], None
    blocks: list[Block] = []
    chart = None
    tables, rest = eval_tables(stage.eval)
    for name, table in tables.items():
        cols = list(dict.fromkeys(c for row in table.values() for c in _scalars(row)))
        if not cols:
            continue
        rows = [[name, *cols]] + [[str(r), *(fmt(_scalars(v)[c]) if c in _scalars(v) else "" for c in cols)]
                                  for r, v in table.items()]
        blocks.append(Block("table", rows=rows))
        if chart is None and not stage.images:
            # one chart of the first metric: columns have unrelated scales (ppl vs bits per byte)
            from lmlab.plots import bars

            head = cols[0]
            chart = bars({str(r): _scalars(v)[head] for r, v in table.items() if head in _scalars(v)},
                         plots / f"{stage.name}_eval.png", title=f"{stage.name}: {head} per {name.rstrip('s')}", ylabel=head)
    flat = {k: v for k, v in flatten(rest).items() if not (isinstance(v, list) and len(v) > 30)}
    if flat:
        items = list(flat.items())
        rows = [["metric", "value"]] + [[k, fmt(v)] for k, v in items[:MAX_FLAT_ROWS]]
        if len(items) > MAX_FLAT_ROWS:
            rows.append(["…", f"{len(items) - MAX_FLAT_ROWS} more in metrics.json"])
        blocks.append(Block("table", rows=rows))
    return blocks, chart


def build_report(stages: list[Stage], root: Path, title: str, n_samples: int = MAX_SAMPLES) -> list[Block]:
    """The report as blocks; writes the plots it references under root/plots/."""
    from lmlab.plots import bars, loss_curves, loss_series, metric_curves

    plots = root / "plots"
    blocks = [Block("h1", title), Block("p", f"Run folder: {root}. Stages: {', '.join(s.name for s in stages)}.")]
    # overview: one row per stage
    overview = [["stage", "steps", "final train loss", "final val loss", "key result"]]
    finals: dict[str, dict[str, float]] = {}
    for s in stages:
        (_, losses), (_, vals) = loss_series(s.rows)
        steps = max((r.get("step", 0) for r in s.rows), default="")
        headline = headline_metric({**numeric(s.result), **numeric(s.eval)})
        text = f"{headline[0]} = {fmt(headline[1])}" if headline else ""
        if not s.trained and s.samples and (headline is None or headline[0].rsplit(".", 1)[-1] not in HEADLINE_KEYS):
            text = samples_headline(s.config) or text
        overview.append([s.name, str(steps), fmt(losses[-1]) if losses else "", fmt(vals[-1]) if vals else "", text])
        if losses:
            finals[s.name] = {"train loss": losses[-1], **({"val loss": vals[-1]} if vals else {})}
    blocks += [Block("h2", "Overview"), Block("table", rows=overview)]
    trained = {s.name: s.rows for s in stages if s.trained}
    if len(trained) > 1:
        path = loss_curves(trained, plots / "all_losses.png", title="Loss of every training stage")
        blocks.append(Block("img", "Loss of every training stage (train solid, val dashed)", path=path))
    if finals:
        path = bars(finals, plots / "final_losses.png", title="Final loss per stage", ylabel="loss")
        blocks.append(Block("img", "Final train/val loss per stage", path=path))

    for s in stages:
        blocks.append(Block("h2", f"Stage: {s.name}"))
        blocks.append(Block("p", f"Folder: {s.path}"))
        settings = key_settings(s.config)
        if settings:
            blocks += [Block("h3", "Key settings"), Block("table", rows=[["key", "value"], *map(list, settings)])]
        finals_s = final_metrics(s)
        if finals_s:
            blocks += [Block("h3", "Final metrics"),
                       Block("table", rows=[["metric", "value"]] + [[k, fmt(v)] for k, v in finals_s.items()])]
        if s.trained:
            path = loss_curves({s.name: s.rows}, plots / f"{s.name}_loss.png", title=f"{s.name}: loss")
            blocks += [Block("h3", "Curves"), Block("img", f"{s.name}: train and val loss", path=path)]
            keys = [k for k in CURVE_KEYS if any(isinstance(r.get(k), (int, float)) for r in s.rows)]
            if keys:
                path = metric_curves(s.rows, keys, plots / f"{s.name}_metrics.png", title=f"{s.name}: {', '.join(keys)}")
                blocks.append(Block("img", f"{s.name}: {', '.join(keys)}", path=path))
        if s.eval:
            table_blocks, chart = _eval_table(s, plots)
            blocks += [Block("h3", "Evaluation"), *table_blocks]
            if chart is not None:
                blocks.append(Block("img", f"{s.name}: evaluation", path=chart))
        for img in s.images:
            blocks.append(Block("img", f"{s.name}: {img.stem}", path=img))
        if s.samples_md:  # eval compare: its own side-by-side tables (samples.jsonl holds the same answers)
            blocks += [Block("h3", "Side-by-side samples"), *markdown_blocks(s.samples_md, n_samples)]
        elif s.samples:
            blocks += [Block("h3", "Samples"), Block("table", rows=_sample_rows(s.samples, n_samples))]
        if s.rollouts:
            blocks += [Block("h3", "Highest-reward rollouts"),
                       Block("p", f"the {n_samples} best of {len(s.rollouts)} logged rollouts (rollouts.jsonl): "
                                  "read them for reward hacking"),
                       Block("table", rows=_top_rollout_rows(s.rollouts, n_samples))]
    return blocks


# -- exports -----------------------------------------------------------------------------------

def metric_rows(stages: list[Stage]) -> list[dict[str, Any]]:
    """Every number as (stage, source, step, metric, value); source is train, val, result or eval."""
    rows: list[dict[str, Any]] = []
    for s in stages:
        for r in s.rows:
            for key, value in numeric(r).items():
                if key != "step":
                    rows.append({"stage": s.name, "source": r.get("split", "train"), "step": r.get("step", ""),
                                 "metric": key, "value": value})
        for source, data in (("result", s.result_only()), ("eval", s.eval)):
            for key, value in numeric(data).items():
                rows.append({"stage": s.name, "source": source, "step": "", "metric": key, "value": value})
    return rows


def write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["stage", "source", "step", "metric", "value"])
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def write_xlsx(stages: list[Stage], rows: list[dict[str, Any]], path: Path) -> Path:
    """Sheet `summary` (final and eval numbers) and one sheet of training rows per trained stage."""
    from openpyxl import Workbook

    book = Workbook()
    summary = book.active
    summary.title = "summary"
    summary.append(["stage", "source", "metric", "value"])
    for r in rows:
        if r["source"] not in ("train", "val"):
            summary.append([r["stage"], r["source"], r["metric"], r["value"]])
    used = {"summary"}
    for s in stages:
        if not s.rows:
            continue
        name = s.name[:31]  # Excel's sheet-name limit
        while name in used:
            name = name[:28] + f"_{len(used)}"
        used.add(name)
        sheet = book.create_sheet(name)
        cols = list(dict.fromkeys(k for r in s.rows for k in numeric(r)))
        sheet.append(["split", *cols])
        for r in s.rows:
            flat = numeric(r)
            sheet.append([r.get("split", "train"), *(flat.get(c) for c in cols)])
    buf = io.BytesIO()
    book.save(buf)
    return atomic_write_bytes(path, buf.getvalue())


def report(cfg: ReportConfig) -> dict[str, Any]:
    """Write report.md, report.html, plots/, metrics.csv and metrics.xlsx into cfg.run_dir."""
    root = Path(cfg.run_dir)
    stages = find_stages(root)
    title = cfg.title or f"lmlab report: {root.resolve().name}"
    blocks = build_report(stages, root, title, cfg.samples)
    md_path = atomic_write_text(root / "report.md", _md(blocks, root))
    html_path = atomic_write_text(root / "report.html", _html(blocks, title))
    rows = metric_rows(stages)
    csv_path = write_csv(rows, root / "metrics.csv")
    xlsx_path = write_xlsx(stages, rows, root / "metrics.xlsx")
    from lmlab.progress import log

    log(f"report: {md_path} and {html_path} ({len(stages)} stage(s), {len(rows)} numbers in {csv_path.name}, {xlsx_path.name})")
    return {"report_md": str(md_path), "report_html": str(html_path), "stages": [s.name for s in stages],
            "plots": sorted(str(p) for p in (root / "plots").glob("*.png")), "metrics_csv": str(csv_path),
            "metrics_xlsx": str(xlsx_path)}
