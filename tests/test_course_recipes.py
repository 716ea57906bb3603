"""The course recipes at `scale=smoke`: each runs end to end and its headline numbers exist and are finite.

They read the real datasets from the local mirror (`LMLAB_DATA_DIR`, which `make test` points at
../shared/data) and are skipped without it. Slow-marked: tens of seconds each on 2 cores.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
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
