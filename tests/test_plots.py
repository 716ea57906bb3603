"""Figures: the data drawn is the data given (figures captured before saving), and PNGs are written."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lmlab import plots


@pytest.fixture
def captured(monkeypatch):
    figs = []

    def keep(fig, out):
        figs.append(fig)
        return out

    monkeypatch.setattr(plots, "_save", keep)
    return figs


def test_loss_curves_split_train_and_val(captured):
    rows = [{"step": 1, "split": "train", "loss": 3.0}, {"step": 2, "split": "train", "loss": 2.0},
            {"step": 2, "split": "val", "loss": 2.5, "ppl": 12.2}, {"step": 3, "split": "train", "loss": float("nan")},
            {"step": 4, "split": "train", "loss": 1.5}, {"step": 4, "split": "val", "loss": 2.25}]
    legacy = [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5, "val_loss": 0.7}]
    plots.loss_curves({"pt": rows, "sft": legacy}, "unused.png", title="t")
    ax = captured[0].axes[0]
    lines = {ln.get_label(): (list(ln.get_xdata()), list(ln.get_ydata())) for ln in ax.get_lines()}
    assert lines["pt train"] == ([1.0, 2.0, 4.0], [3.0, 2.0, 1.5])  # the NaN row is skipped
    assert lines["pt val"] == ([2.0, 4.0], [2.5, 2.25])
    assert lines["sft train"] == ([1.0, 2.0], [1.0, 0.5]) and lines["sft val"] == ([2.0], [0.7])
    assert ax.get_xlabel() == "optimizer step" and ax.get_title() == "t"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["pt train", "pt val", "sft train", "sft val"]


def test_bars_grouped_heights_and_labels(captured):
    plots.bars({"tinystories": {"base": 41.2, "sft": 17.9}, "ptb": {"base": 80.0}}, "unused.png", ylabel="PPL")
    ax = captured[0].axes[0]
    heights = [round(p.get_height(), 6) for p in ax.patches]
    assert heights[:2] == [41.2, 80.0] and heights[2] == 17.9 and math.isnan(heights[3])  # series base, then sft
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == ["17.9", "41.2", "80"]  # no label on the missing bar
    assert [t.get_text() for t in ax.get_xticklabels()] == ["tinystories", "ptb"]


def test_histograms_density_and_kde(captured):
    a = [0.0, 1.0, 1.0, 2.0]
    b = [5.0, 5.0, 5.0]  # constant: histogram only, no KDE (singular covariance)
    plots.histograms(a, b, "unused.png", bins=5)
    ax = captured[0].axes[0]
    labels = [ln.get_label() for ln in ax.get_lines()]
    assert "chosen KDE" in labels and "rejected KDE" not in labels
    # each density histogram integrates to one
    for colour_patches in (ax.containers[0], ax.containers[1]):
        area = sum(p.get_height() * p.get_width() for p in colour_patches)
        assert area == pytest.approx(1.0)


def test_scatter_fit_line(captured):
    plots.scatter({"chosen": ([1, 2, 3], [2, 4, 6]), "rejected": ([4], [8])}, "unused.png", xlabel="words")
    fit = next(ln for ln in captured[0].axes[0].get_lines() if ln.get_label().startswith("fit"))
    assert fit.get_label() == "fit: slope 2"
    assert np.allclose(fit.get_ydata(), [2.0, 8.0])


def test_pngs_are_written(tmp_path):
    out = plots.bars({"a": 1.0}, tmp_path / "sub" / "b.png", title="x")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "sub").glob(".*tmp"))  # atomic write left no temp file


def test_metric_curves_one_panel_per_key(captured):
    rows = [{"step": 1, "split": "train", "accuracy": 0.5, "margin": 0.1}, {"step": 2, "split": "train", "accuracy": 0.75},
            {"step": 2, "split": "val", "accuracy": 0.7, "margin": 0.4}]
    plots.metric_curves(rows, ["accuracy", "margin", "reward_chosen"], "unused.png")
    axes = [ax for ax in captured[0].axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["accuracy", "margin", "reward_chosen"]
    acc = {ln.get_label(): list(ln.get_ydata()) for ln in axes[0].get_lines()}
    assert acc == {"train": [0.5, 0.75], "val": [0.7]}
    assert {ln.get_label(): list(ln.get_ydata()) for ln in axes[1].get_lines()} == {"train": [0.1], "val": [0.4]}
    assert not axes[2].get_lines()  # a key nobody logged gives an empty panel, not an error
