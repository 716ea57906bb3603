"""The course recipes at `scale=smoke`: each runs end to end and its headline numbers exist and are finite.

They read the real datasets from the local mirror (`LMLAB_DATA_DIR`, which `make test` points at
../shared/data) and are skipped without it. Slow-marked: tens of seconds each on 2 cores.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from lmlab.config import opt

ROOT = Path(__file__).resolve().parents[1]
CALLS: list[tuple[str, str]] = []


@dataclass
class EchoConfig:
    """A stand-in command for the course machinery test."""

    out: str = opt(help="run folder")
    text: str = opt("hi", "what to echo")


def echo(cfg: EchoConfig) -> dict:
    CALLS.append((cfg.out, cfg.text))
    return {"echoed": cfg.text}
MIRROR = Path(os.environ.get("LMLAB_DATA_DIR") or ROOT.parent / "shared" / "data")


def needs(*folders: str):
    missing = [f for f in folders if not (MIRROR / f).exists()]
    return pytest.mark.skipif(bool(missing), reason=f"data mirror lacks {', '.join(missing)} (set LMLAB_DATA_DIR)")


def run(recipe: str, tmp_path, monkeypatch, **overrides) -> dict:
    from lmlab.recipes import RunConfig, run_recipe

    monkeypatch.setenv("LMLAB_DATA_DIR", str(MIRROR))
    monkeypatch.chdir(ROOT)  # recipes name repository files (recipes/data/...) relative to the root
    return run_recipe(RunConfig(recipe=recipe, scale="smoke", out=str(tmp_path), overrides=overrides))


def finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


@pytest.mark.slow
@needs("ptb", "wikitext-2")
def test_ptb_three_models_smoke(tmp_path, monkeypatch):
    run("recipes/ptb-three-models.yaml", tmp_path, monkeypatch)
    models = ("rnn", "lstm", "transformer")
    for m in models:
        assert finite(json.loads((tmp_path / m / "result.json").read_text())["val_ppl"])
    test = json.loads((tmp_path / "test_ppl" / "metrics.json").read_text())
    assert set(test) == set(models) and all(finite(test[m]["ppl"]) and finite(test[m]["bpb"]) for m in models)
    # the per-sentence cross-domain table: one row per line of the file, one column per model
    sentences = (ROOT / "recipes" / "data" / "other-domains.txt").read_text().splitlines()
    per = json.loads((tmp_path / "per_sentence" / "metrics.json").read_text())
    for m in models:
        assert len(per[m]["per_text"]) == len(sentences) and all(finite(r["ppl"]) for r in per[m]["per_text"])
        assert per[m]["mean_text_ppl"] == pytest.approx(sum(r["ppl"] for r in per[m]["per_text"]) / len(sentences))
    table = (tmp_path / "per_sentence" / "table.md").read_text()
    assert "| mean of per-text ppl |" in table and sentences[0][:40] in table
    # WikiText headings are dropped in the cross-domain rows
    cross = json.loads((tmp_path / "cross_domain" / "metrics.json").read_text())
    assert all(finite(cross[m]["per_set"]["wikitext2"]["ppl"]) for m in models)
    report = (tmp_path / "report.md").read_text()
    assert "temperature 1.3" in report and sentences[1][:40] in report


@pytest.mark.slow
@needs("rocstories", "tinystories")
def test_rocstories_smoke(tmp_path, monkeypatch):
    run("recipes/rocstories.yaml", tmp_path, monkeypatch)
    for stage in ("seq2seq_bleu", "sft_greedy", "sft_beam"):
        m = json.loads((tmp_path / stage / "metrics.json").read_text())
        assert m["n"] == 4 and finite(m["bleu"]) and finite(m["rougeL"])
        assert 1 <= m["distinct_outputs"] <= 4 and isinstance(m["same_output_for_every_prompt"], bool)
    sft = json.loads((tmp_path / "decoder_sft" / "result.json").read_text())
    assert sft["trainable_params"] < sft["total_params"] and finite(sft["val_ppl"])  # partial freezing
    cfg = (tmp_path / "decoder_sft" / "config.yaml").read_text()
    assert "grad_accum: 2" in cfg and "tuning: freeze" in cfg


@pytest.mark.slow
@needs("chinese-poetry", "instruct")
def test_chinese_char_smoke(tmp_path, monkeypatch):
    run("recipes/chinese-char.yaml", tmp_path, monkeypatch)
    tok = json.loads((tmp_path / "tokenizer" / "metrics.json").read_text())
    assert tok["kind"] == "char" and tok["unk_rate"] < 0.05  # one vocabulary covers poems and instructions
    assert finite(json.loads((tmp_path / "pt" / "result.json").read_text())["val_ppl"])
    sft = json.loads((tmp_path / "sft" / "result.json").read_text())
    assert sft["val_ppl_tokens"] == "answer" and finite(sft["val_ppl"]) and finite(sft["val_ppl_all_tokens"])
    rouge = json.loads((tmp_path / "rouge" / "metrics.json").read_text())
    assert rouge["lang"] == "zh" and rouge["n"] == sft["val_examples"] and finite(rouge["rougeL"])


@pytest.mark.slow
@needs("instruct", "eval/mmlu", "eval/openbookqa", "eval/gsm8k")
def test_sft_alpaca_smoke(tmp_path, monkeypatch, tiny_qwen2_dir):
    run("recipes/sft-alpaca.yaml", tmp_path, monkeypatch, base={"model": str(tiny_qwen2_dir)})
    masked = json.loads((tmp_path / "sft_masked" / "result.json").read_text())
    unmasked = json.loads((tmp_path / "sft_unmasked" / "result.json").read_text())
    # both scored on the same held-out answer tokens; all-token PPL beside it
    assert masked["val_tokens_answer"] == unmasked["val_tokens_answer"] > 0
    assert all(finite(r[k]) for r in (masked, unmasked) for k in ("val_ppl", "val_ppl_all_tokens"))
    bench = json.loads((tmp_path / "bench" / "metrics.json").read_text())
    assert len(bench) == 3  # before, masked, unmasked
    for m in bench.values():
        for task in ("mmlu", "openbookqa", "gsm8k"):
            assert task in m
    for stage in ("answers_masked", "answers_unmasked"):
        assert finite(json.loads((tmp_path / stage / "metrics.json").read_text())["rougeL"])


def test_course_plans_every_part_at_every_scale(tmp_path, monkeypatch):
    """The course recipe: every part exists, has a smoke profile, and validates (before anything runs)."""
    from lmlab.config import load_yaml
    from lmlab.recipes import plan

    monkeypatch.chdir(ROOT)
    course = load_yaml(ROOT / "recipes" / "course.yaml")
    names = []
    for item in course["recipes"]:
        path = ROOT / "recipes" / (item["recipe"] if isinstance(item, dict) else item)
        recipe = load_yaml(path)
        assert "smoke" in (recipe.get("profiles") or {}), path
        name, root, stages = plan(recipe, source=str(path), scale="smoke", overrides={}, out=str(tmp_path / path.stem))
        names.append(name)
        assert stages and root == tmp_path / path.stem
    assert {"ptb-three-models", "tinystories-scratch", "chinese-char", "rocstories", "sft-alpaca"} <= set(names)


def test_a_course_runs_its_parts_and_writes_one_report(tmp_path, monkeypatch):
    """A recipe of recipes: parts run into <out>/<part>/, ${course} and PART.STAGE overrides, one report."""
    import yaml

    from lmlab import cli
    from lmlab.recipes import RunConfig, run_recipe

    CALLS.clear()
    monkeypatch.setattr(cli, "COMMANDS", [*cli.COMMANDS, cli.Command("test echo", f"{__name__}:EchoConfig", f"{__name__}:echo")])
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({"name": "a", "stages": {"s": {"run": "test echo", "text": "x"}},
                                                      "profiles": {"smoke": {"s": {"text": "small"}}}}))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump({"name": "b", "stages": {"t": {"run": "test echo", "text": "y"}},
                                                      "profiles": {"smoke": {}}}))
    (tmp_path / "course.yaml").write_text(yaml.safe_dump({"name": "c", "recipes": [
        "a.yaml", {"recipe": "b.yaml", "overrides": {"t": {"text": "${course}/a/s"}}}]}))
    out = tmp_path / "run"
    run_recipe(RunConfig(recipe=str(tmp_path / "course.yaml"), scale="smoke", out=str(out), overrides={"a": {"s": {"text": "cli"}}}))
    assert [(str(out / "a" / "s"), "cli"), (str(out / "b" / "t"), f"{out}/a/s")] == CALLS
    first = json.loads((out / "course.json").read_text())
    assert set(first["seconds_per_part"]) == {"a", "b"} and first["invocations"] == 1
    # a resumed course adds its seconds to the earlier ones instead of replacing them
    run_recipe(RunConfig(recipe=str(tmp_path / "course.yaml"), scale="smoke", out=str(out),
                         overrides={"a": {"s": {"text": "cli"}}}), resume=True)
    again = json.loads((out / "course.json").read_text())
    assert again["invocations"] == 2 and all(again["seconds_per_part"][p] >= first["seconds_per_part"][p] for p in "ab")
    assert again["seconds"] == pytest.approx(sum(again["seconds_per_part"].values()), abs=0.11)
    md = (out / "report.md").read_text()
    assert "a.s" in md and "b.t" in md  # one report over both parts' stages
    with pytest.raises(Exception, match="unknown part"):
        run_recipe(RunConfig(recipe=str(tmp_path / "course.yaml"), out=str(out), overrides={"zz": {"s": {"text": "q"}}}))



@pytest.mark.slow
@needs("tinystories", "wikitext-2")
def test_tinystories_scratch_and_finetune_grid_smoke(tmp_path, monkeypatch):
    run("recipes/tinystories-scratch.yaml", tmp_path, monkeypatch)
    assert finite(json.loads((tmp_path / "pt" / "result.json").read_text())["val_ppl"])
    grid = json.loads((tmp_path / "finetune" / "metrics.json").read_text())
    assert [r["data_fraction"] for r in grid["rows"]] == [0.5, 1.0] and all(r["sample"] for r in grid["rows"])
    assert len(grid["ppl_before"]) == 2 and all(finite(x) for v in grid["ppl_after"].values() for x in v)
    assert "| held-out text | before |" in (tmp_path / "report.md").read_text(errors="replace")
