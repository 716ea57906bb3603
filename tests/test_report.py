"""`lmlab report` on a fake recipe run folder built from artifacts only (no training)."""
from __future__ import annotations

import csv
import json
import os
import re
import time

import pytest
import yaml

from lmlab.errors import LmlabError
from lmlab.report import ReportConfig, find_stages, flatten, metric_rows, report


def _stage(root, name, *, config, rows=(), result=None, eval_metrics=None, samples=(), png=False):
    path = root / name
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    if rows:
        (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if result is not None:
        (path / "result.json").write_text(json.dumps(result))
    if eval_metrics is not None:
        (path / "metrics.json").write_text(json.dumps(eval_metrics))
    if samples:
        (path / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    if png:
        from lmlab.plots import bars

        bars({"a": 1.0, "b": 2.0}, path / "ppl.png", title="ppl")
    return path


@pytest.fixture
def fake_run(tmp_path):
    root = tmp_path / "myrun"
    # pt: rows as the Trainer writes them (split-tagged); sft: an older layout with a val_loss key
    pt_rows = [{"step": s, "split": "train", "loss": 5.0 - 0.1 * s, "lr": 1e-3} for s in range(1, 21)]
    pt_rows.insert(10, {"step": 10, "split": "val", "loss": 4.5, "ppl": 90.0})
    pt_rows.append({"step": 20, "split": "val", "loss": 3.9, "ppl": 49.4})
    sft_rows = [{"step": s, "loss": 2.0 - 0.05 * s} for s in range(1, 11)] + [{"step": 10, "val_loss": 1.7}]
    sft_rows[-2]["accuracy"] = 0.8  # a logged metric besides the loss gets its own curve
    _stage(root, "pt", config={"model": "transformer:tiny", "data": "storyworld/pretrain", "lr": 1e-3, "max_steps": 20,
                               "lora": {"rank": 8}, "tuning": None},
           rows=pt_rows, result={"loss": 3.1, "val_loss": 3.9}, samples=[{"step": 20, "prompt": "Once", "completion": "upon a time"}])
    time.sleep(0.02)
    _stage(root, "sft", config={"model": "runs/x/pt", "tuning": "lora", "lora": {"rank": 8, "alpha": 16}},
           rows=sft_rows, result={"loss": 1.5, "val_loss": 1.7})
    time.sleep(0.02)
    # eval ppl's layout: one mapping per model, with nested breakdowns the table leaves out
    _stage(root, "ppl", config={"model": "a,b"}, png=True, result={"pt": {"ppl": 41.5}, "elapsed_s": 3.0}, eval_metrics={
        "pt": {"model": "runs/x/pt", "ppl": 41.5, "bpb": 1.2, "per_set": {"s": {"ppl": 41.5}}, "per_text": [{"ppl": 1.0}] * 20},
        "sft": {"model": "runs/x/sft", "ppl": 17.25, "bpb": 0.9, "per_set": {"s": {"ppl": 17.25}}, "per_text": []}})
    time.sleep(0.02)
    # eval compare's layout: a `table` for reports plus everything else
    _stage(root, "judge", config={"model": "a,b", "judge": "gold"}, eval_metrics={
        "table": {"pt": {"gold_mean": 0.25, "words": 40.0}, "sft": {"gold_mean": 0.75, "gold_win_rate": 0.875, "words": 52.0}},
        "prompts": 8, "judges": {"gold": {"models": {"sft": {"paired_p": 0.01}}}}})
    (root / "judge" / "samples.md").write_text(
        "| # | prompt | pt | sft |\n|---|---|---|---|\n| 1 | a cat? | meow\\|purr<br>*gold=0.1* | The cat sat.<br>*gold=0.9* |\n")
    (root / "judge" / "samples.jsonl").write_text(json.dumps({"prompt": "a cat?", "answer_pt": "meow|purr"}) + "\n")
    # the stage order comes from artifact times, not names: make pt clearly first
    for i, name in enumerate(("pt", "sft", "ppl", "judge")):
        for f in (root / name).iterdir():
            os.utime(f, (1_000_000 + i * 100, 1_000_000 + i * 100))
    (root / "notastage").mkdir()
    return root


def test_report_has_every_section_and_plot(fake_run):
    out = report(ReportConfig(run_dir=str(fake_run)))
    assert out["stages"] == ["pt", "sft", "ppl", "judge"]
    md = (fake_run / "report.md").read_text()
    for heading in ("# lmlab report: myrun", "## Overview", "## Stage: pt", "## Stage: sft", "## Stage: ppl",
                    "### Key settings", "### Final metrics", "### Curves", "### Evaluation", "### Samples"):
        assert heading in md, heading
    # sections appear in run order
    assert md.index("## Stage: pt") < md.index("## Stage: sft") < md.index("## Stage: ppl")
    # every referenced image exists and is a non-empty PNG
    refs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert "plots/all_losses.png" in refs and "plots/pt_loss.png" in refs and "plots/sft_loss.png" in refs
    assert "plots/sft_metrics.png" in refs and "plots/pt_metrics.png" not in refs
    # a stage's own PNG is shown; a chart is drawn only for an eval stage that has none
    assert "ppl/ppl.png" in refs and "plots/ppl_eval.png" not in refs and "plots/judge_eval.png" in refs
    for ref in refs:
        data = (fake_run / ref).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000, ref
    # overview row of pt: 20 steps, last train loss 5.0 - 2.0 = 3.0, last val loss 3.9
    assert "| pt | 20 | 3 | 3.9 |  |" in md
    # the overview's headline number: the first of HEADLINE_KEYS a stage has
    assert "| ppl |  |  |  | pt.ppl = 41.5 |" in md and "| judge |  |  |  | table.sft.gold_win_rate = 0.875 |" in md
    # lora.rank is shown for the LoRA stage only
    sft_part = md[md.index("## Stage: sft"):md.index("## Stage: ppl")]
    pt_part = md[md.index("## Stage: pt"):md.index("## Stage: sft")]
    assert "| lora.rank | 8 |" in sft_part and "lora.rank" not in pt_part
    # eval tables: models × metrics (own numbers only), then the rest as key/value rows
    assert "| models | ppl | bpb |" in md and "| pt | 41.5 | 1.2 |" in md and "| sft | 17.25 | 0.9 |" in md
    assert "| models | gold_mean | words | gold_win_rate |" in md and "| pt | 0.25 | 40 |  |" in md
    assert "| judges.gold.models.sft.paired_p | 0.01 |" in md and "per_text" not in md
    # a recipe copies an eval's metrics into result.json: shown once, only what is new is a final metric
    ppl_part = md[md.index("## Stage: ppl"):md.index("## Stage: judge")]
    assert "| elapsed_s | 3 |" in ppl_part and "| pt.ppl |" not in ppl_part
    assert "upon a time" in md
    # eval compare's side-by-side samples become a real table (not a code block), shown once
    judge_part = md[md.index("## Stage: judge"):]
    assert "### Side-by-side samples" in judge_part and "### Samples" not in judge_part and "```" not in judge_part
    assert "| 1 | a cat? | meow\\|purr<br>*gold=0.1* | The cat sat.<br>*gold=0.9* |" in judge_part


def test_html_is_self_contained(fake_run):
    report(ReportConfig(run_dir=str(fake_run)))
    page = (fake_run / "report.html").read_text()
    srcs = re.findall(r"src=['\"]([^'\"]+)", page)
    md_refs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (fake_run / "report.md").read_text())
    assert len(srcs) == len(md_refs) > 0
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<link" not in page and "http://" not in page and "https://" not in page
    assert "<td>meow|purr\n*gold=0.1*</td>" in page  # side-by-side samples as an HTML table


def test_csv_and_xlsx_hold_every_number(fake_run):
    from openpyxl import load_workbook

    report(ReportConfig(run_dir=str(fake_run)))
    with open(fake_run / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    # pt: 20 train rows × (loss, lr) + 2 val rows × (loss, ppl); sft: 10 loss + 1 accuracy + 1 val_loss; results 2+2;
    # ppl eval: 2 × (ppl, bpb, per_set.s.ppl); judge eval: 5 table numbers + prompts + paired_p
    assert len(rows) == 20 * 2 + 2 * 2 + 10 + 1 + 1 + 2 + 2 + 1 + 6 + 7  # ppl's result adds only elapsed_s
    assert {"stage": "ppl", "source": "eval", "step": "", "metric": "sft.ppl", "value": "17.25"} in rows
    assert {"stage": "pt", "source": "val", "step": "20", "metric": "loss", "value": "3.9"} in rows
    assert {"stage": "sft", "source": "train", "step": "10", "metric": "val_loss", "value": "1.7"} in rows
    book = load_workbook(fake_run / "metrics.xlsx")
    assert book.sheetnames == ["summary", "pt", "sft"]
    assert book["pt"].max_row == 23  # header + 20 train + 2 val rows
    assert [c.value for c in book["pt"][1]] == ["split", "step", "loss", "lr", "ppl"]
    assert [c.value for c in book["pt"][12]] == ["val", 10, 4.5, None, 90.0]
    summary = [tuple(c.value for c in r) for r in book["summary"].iter_rows(min_row=2)]
    assert ("ppl", "eval", "pt.ppl", 41.5) in summary and len(summary) == 4 + 1 + 6 + 7


def test_single_stage_folder(fake_run):
    out = report(ReportConfig(run_dir=str(fake_run / "sft")))
    assert out["stages"] == ["sft"]
    assert (fake_run / "sft" / "report.html").exists() and (fake_run / "sft" / "plots" / "sft_loss.png").exists()


def test_errors_name_the_folder(tmp_path):
    with pytest.raises(LmlabError, match="no such folder"):
        find_stages(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LmlabError, match=r"empty: no stage folders found.*metrics.jsonl"):
        find_stages(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "result.json").write_text("{oops")
    with pytest.raises(LmlabError, match=r"result.json:1: not valid JSON"):
        find_stages(bad)


def test_flatten_and_metric_rows():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": [1, 2]}) == {"a.b": 1, "a.c.d": 2, "e": [1, 2]}
    from lmlab.report import Stage

    s = Stage("x", None, rows=[{"step": 1, "loss": 2.0, "ok": True, "nan": float("nan")}], result={"acc": 1})
    assert metric_rows([s]) == [
        {"stage": "x", "source": "train", "step": 1, "metric": "loss", "value": 2.0},
        {"stage": "x", "source": "result", "step": "", "metric": "acc", "value": 1.0},
    ]


def test_samples_stage_headlines_its_prompt_and_temperature(tmp_path):
    root = tmp_path / "run"
    _stage(root, "gen", config={"model": "runs/x/pt", "prompt": "Once upon", "temperature": 0.8, "top_k": 50,
                                "top_p": 1.0, "beams": 1},
           eval_metrics={"prompts": 1, "samples": 3, "tokens_per_s": 120.0},
           samples=[{"prompt": "Once upon", "sample": 0, "text": "a time"}])
    report(ReportConfig(run_dir=str(root)))
    md = (root / "report.md").read_text()
    assert "| gen |  |  |  | prompt 'Once upon' · temperature 0.8 · top_k 50 |" in md
    assert "prompts = 1" not in md


def test_ppl_stage_shows_its_per_sentence_table(tmp_path):
    root = tmp_path / "run"
    stage = _stage(root, "per_sentence", config={}, eval_metrics={
        "rnn": {"ppl": 400.0, "per_text": [{"ppl": 350.9}]}, "lstm": {"ppl": 300.0, "per_text": [{"ppl": 316.9}]}})
    (stage / "table.md").write_text("### Perplexity (other-domains)\n\n| text | rnn ppl | lstm ppl |\n|---|---|---|\n"
                                    "| the central bank raised rates | 350.9 | 316.9 |\n| mean of per-text ppl | 350.9 | 316.9 |\n")
    report(ReportConfig(run_dir=str(root)))
    md = (root / "report.md").read_text()
    assert "| the central bank raised rates | 350.9 | 316.9 |" in md and "| mean of per-text ppl | 350.9 | 316.9 |" in md


def test_rl_stage_shows_its_highest_reward_rollouts(tmp_path):
    """An online RL stage's report lists its best rollouts by reward (where reward hacking shows), best first."""
    rows = [{"step": s, "split": "train", "loss": 0.1, "reward": 0.1 * s, "kl": 0.5 * s} for s in range(1, 5)]
    path = _stage(tmp_path / "rl", "grpo", config={"model": "runs/x/sft", "reward": "runs/rm"}, rows=rows,
                  result={"eval_reward_before": 0.0, "eval_reward_after": 0.4})
    rollouts = [{"round": i, "prompt": f"p{i}", "completion": f"answer number {i}", "reward": r}
                for i, r in enumerate([0.2, 3.5, -1.0, 1.25])]
    (path / "rollouts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rollouts))
    report(ReportConfig(run_dir=str(tmp_path / "rl"), samples=2))
    md = (tmp_path / "rl" / "report.md").read_text()
    section = md[md.index("Highest-reward rollouts"):]
    assert "the 2 best of 4 logged rollouts" in section
    assert section.index("answer number 1") < section.index("answer number 3")  # 3.5 before 1.25
    assert "answer number 0" not in section and "answer number 2" not in section
