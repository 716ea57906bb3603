"""Matplotlib figures for reports and eval commands: loss curves, bar charts, distributions.

Every function takes plain numbers (lists, dicts) and a PNG path, draws one figure with a title,
labelled axes and a legend, writes it atomically and returns the path. They use the Agg backend
so they work on headless machines and inside tests; nothing here reads run folders (report.py
does), so the eval commands can call the same functions on their own results.

    from lmlab.plots import bars
    bars({"base": 41.2, "sft": 17.9}, "ppl.png", title="Perplexity", ylabel="PPL")
"""
from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display is needed, and none is opened by accident

import matplotlib.pyplot as plt
import numpy as np

from lmlab.runs import atomic_write_bytes

# Keys a training loop may use for its held-out loss, in order of preference.
VAL_LOSS_KEYS = ("val_loss", "eval_loss", "eval/loss", "val/loss")


def _save(fig: plt.Figure, out: str | Path) -> Path:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(out, buf.getvalue())


def _series(rows: Sequence[Mapping], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of rows that carry a finite `key`."""
    xs, ys = [], []
    for row in rows:
        value = row.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value) and "step" in row:
            xs.append(float(row["step"]))
            ys.append(float(value))
    return xs, ys


def split_rows(rows: Sequence[Mapping]) -> tuple[list[Mapping], list[Mapping]]:
    """(train rows, val rows) of metrics.jsonl: the trainer tags each row `split: train|val`."""
    train = [r for r in rows if r.get("split", "train") != "val"]
    val = [r for r in rows if r.get("split") == "val"]
    return train, val


def val_key(rows: Sequence[Mapping]) -> str | None:
    """The held-out loss key of untagged rows (`val_loss`, `eval_loss` ...), if any."""
    for key in VAL_LOSS_KEYS:
        if any(key in r for r in rows):
            return key
    return None


def loss_series(rows: Sequence[Mapping]) -> tuple[tuple[list[float], list[float]], tuple[list[float], list[float]]]:
    """((train steps, losses), (val steps, losses)) from metrics rows, tagged or with a val_loss key."""
    train, val = split_rows(rows)
    vx, vy = _series(val, "loss")
    key = val_key(train)
    if key:
        kx, ky = _series(train, key)
        vx, vy = vx + kx, vy + ky
    order = sorted(range(len(vx)), key=lambda i: vx[i])
    return _series(train, "loss"), ([vx[i] for i in order], [vy[i] for i in order])


def loss_curves(runs: Mapping[str, Sequence[Mapping]], out: str | Path, *, title: str = "Loss",
                log_y: bool = False) -> Path:
    """Train (solid) and validation (dashed, markers) loss against optimizer step, one colour per run.

    `runs` maps a label (a stage name) to its metrics.jsonl rows (`{"step", "split", "loss"}`).
    Different stages have different loss scales (LM cross-entropy vs Bradley–Terry), so a
    combined figure is still useful for shape, but each stage also gets its own figure.
    """
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    drawn = 0
    for i, (label, rows) in enumerate(runs.items()):
        colour = colours[i % len(colours)]
        (xs, ys), (vx, vy) = loss_series(rows)
        if xs:
            ax.plot(xs, ys, color=colour, label=f"{label} train")
            drawn += 1
        if vx:
            ax.plot(vx, vy, color=colour, linestyle="--", marker="o", markersize=3, label=f"{label} val")
            drawn += 1
    if not drawn:
        ax.text(0.5, 0.5, "no loss values logged", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss" + (" (log scale)" if log_y else ""))
    if log_y:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8)
    return _save(fig, out)


def metric_curves(rows: Sequence[Mapping], keys: Sequence[str], out: str | Path, *, title: str = "") -> Path:
    """One panel per logged metric (e.g. a reward model's accuracy and margin), train solid, val dashed."""
    train, val = split_rows(rows)
    ncols = min(2, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.0 * ncols + 1, 3.4 * nrows + 0.4), squeeze=False)
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    for ax, key in zip(axes.flat, keys, strict=False):
        for part, style, label in ((train, {}, "train"), (val, {"linestyle": "--", "marker": "o", "markersize": 3}, "val")):
            xs, ys = _series(part, key)
            if xs:
                ax.plot(xs, ys, label=label, **style)
        ax.set_title(key)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, out)


def bars(table: Mapping[str, float] | Mapping[str, Mapping[str, float]], out: str | Path, *,
         title: str = "", ylabel: str = "", fmt: str = "{:.3g}") -> Path:
    """A bar chart, values printed on the bars.

    `table` is `{label: value}` (one bar each) or `{group: {series: value}}` (grouped bars, e.g.
    `{"tinystories": {"base": 41.2, "sft": 17.9}}` for perplexity of two models on two sets).
    """
    groups = list(table)
    nested = any(isinstance(v, Mapping) for v in table.values())
    # series in first-seen order, so the legend follows the order the caller wrote
    series = list(dict.fromkeys(s for g in groups for s in table[g])) if nested else [""]  # type: ignore[union-attr]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(groups) * max(1, len(series)) + 2), 4.2))
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for j, name in enumerate(series):
        values = [float(table[g].get(name, np.nan)) if nested else float(table[g]) for g in groups]  # type: ignore[union-attr, arg-type]
        pos = x - 0.4 + width * (j + 0.5)
        rects = ax.bar(pos, values, width, label=name or None)
        for rect, value in zip(rects, values, strict=True):
            if math.isfinite(value):
                ax.annotate(fmt.format(value), (rect.get_x() + rect.get_width() / 2, rect.get_height()),
                            ha="center", va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(x, groups, rotation=20 if len(groups) > 4 else 0, ha="right" if len(groups) > 4 else "center")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    if nested:
        ax.legend(fontsize=8)
    ax.margins(y=0.12)
    return _save(fig, out)


def histograms(a: Sequence[float], b: Sequence[float], out: str | Path, *, labels: tuple[str, str] = ("chosen", "rejected"),
               title: str = "Reward distributions", xlabel: str = "reward", bins: int = 20) -> Path:
    """Two overlaid density histograms with a Gaussian KDE line each (scipy.stats.gaussian_kde).

    The KDE is skipped for a sample with fewer than two distinct values (its covariance is singular).
    """
    from scipy.stats import gaussian_kde

    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    both = np.concatenate([a_arr, b_arr]) if len(a_arr) + len(b_arr) else np.zeros(1)
    lo, hi = float(both.min()), float(both.max())
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    grid = np.linspace(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo), 200)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    # green/red say good/bad: only for chosen vs rejected, neutral colours for model A vs model B
    colours = ("tab:green", "tab:red") if tuple(labels) == ("chosen", "rejected") else ("tab:blue", "tab:orange")
    for arr, label, colour in ((a_arr, labels[0], colours[0]), (b_arr, labels[1], colours[1])):
        if len(arr) == 0:
            continue
        ax.hist(arr, bins=edges, density=True, alpha=0.35, color=colour, label=f"{label} (n={len(arr)})")
        if len(np.unique(arr)) > 1:
            ax.plot(grid, gaussian_kde(arr)(grid), color=colour, linewidth=1.8, label=f"{label} KDE")
        ax.axvline(float(arr.mean()), color=colour, linestyle=":", linewidth=1.2)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out)


def scatter(groups: Mapping[str, tuple[Sequence[float], Sequence[float]]], out: str | Path, *, title: str = "",
            xlabel: str = "", ylabel: str = "", fit: bool = True) -> Path:
    """Scatter of (x, y) per group (e.g. reward vs length for chosen/rejected), with one least-squares line over all points."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colours = {"chosen": "tab:green", "rejected": "tab:red"}
    all_x: list[float] = []
    all_y: list[float] = []
    for label, (xs, ys) in groups.items():
        ax.scatter(xs, ys, s=12, alpha=0.6, label=label, color=colours.get(label))
        all_x += list(map(float, xs))
        all_y += list(map(float, ys))
    if fit and len(set(all_x)) > 1:
        slope, intercept = np.polyfit(all_x, all_y, 1)
        line_x = np.array([min(all_x), max(all_x)])
        ax.plot(line_x, slope * line_x + intercept, color="black", linewidth=1, label=f"fit: slope {slope:.3g}")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if groups:
        ax.legend(fontsize=8)
    return _save(fig, out)


def reward_vs_kl(runs: Mapping[str, Sequence[tuple[int, float, float, float]]], out: str | Path, *,
                 learned: str = "learned reward", gold: str = "gold reward") -> Path:
    """Over-optimisation at a glance: held-out learned and gold reward against KL to the start.

    `runs` maps a run name to its evaluations as (step, KL, learned reward, gold reward) points,
    the starting policy first (step 0, KL 0); each point is labelled with its step. Gao et al.
    (2023) plot the same: the proxy keeps rising with KL while the gold reward flattens or falls —
    where the two panels part is where RL stops helping.
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, points in runs.items():
        kl = [p[1] for p in points]
        for ax, i in ((axes[0], 2), (axes[1], 3)):
            ys = [p[i] for p in points]
            line = ax.plot(kl, ys, marker="o", markersize=4, label=name)[0]
            for p, x, y in zip(points, kl, ys, strict=True):
                ax.annotate(str(p[0]), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7,
                            color=line.get_color())
    for ax, label in ((axes[0], learned), (axes[1], gold)):
        ax.set_title(f"held-out {label} (labels: step)")
        ax.set_xlabel("KL to the starting policy (nats per completion, training rollouts)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, out)
