"""`lmlab ablate stage=pt`: a grid of plain-text fine-tuning runs with the per-text PPL before/after table."""
from __future__ import annotations

import math

import pytest

from conftest import corpus


def test_ablation_grid_for_plain_text_fine_tuning(tiny_qwen2_dir, tmp_path):
    """stage=pt: train pt cells from a pretrained model; per-text PPL before/after; one sample per cell."""
    from lmlab.config import build
    from lmlab.eval.perplexity import score_texts
    from lmlab.train.ablation import AblationConfig
    from lmlab.train.ablation import run as ablate

    data = tmp_path / "texts.txt"
    data.write_text("\n\n".join(corpus(40, seed=5)) + "\n")
    keys = dict(stage="pt", model=str(tiny_qwen2_dir), data=str(data), out=str(tmp_path / "abl"), val_fraction=0.2,
                batch_size=2, lr=3e-3, device="cpu", max_length=16, keep_best=False, ppl_texts=3,
                grid={"epochs": [1, 2], "data_fraction": [0.5, 1.0]})
    summary = ablate(build(AblationConfig, keys))
    rows = summary["rows"]
    assert [(r["epochs"], r["data_fraction"]) for r in rows] == [(1, 0.5), (1, 1.0), (2, 0.5), (2, 1.0)]
    n_train = rows[1]["train_texts"]
    assert all(r["train_texts"] == math.ceil(r["data_fraction"] * n_train) for r in rows)  # nested subsets
    assert all(isinstance(r["sample"], str) and r["sample"] for r in rows)
    assert len(summary["texts"]) == 3 and set(summary["ppl_after"]) == {
        "epochs1_data_fraction0.5", "epochs1_data_fraction1.0", "epochs2_data_fraction0.5", "epochs2_data_fraction1.0"}
    # "before" is the starting model's per-text PPL on the same held-out texts
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(tiny_qwen2_dir), AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir)
    want = [s.ppl for s in score_texts(model.eval(), tok, summary["texts"], max_length=16, stride=8)]
    assert summary["ppl_before"] == pytest.approx(want, rel=1e-4)
    # training on this corpus lowers held-out PPL of the most-trained cell on average
    full = summary["ppl_after"]["epochs2_data_fraction1.0"]
    assert sum(full) / 3 < sum(want) / 3
    table = (tmp_path / "abl" / "ppl_table.md").read_text()
    assert "| held-out text | before | epochs1_data_fraction0.5 |" in table and "| mean of per-text ppl |" in table
