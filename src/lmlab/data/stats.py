"""Corpus statistics and corpus comparison: sizes, length distributions, word-frequency divergence.

    lmlab data stats tinystories tokenizer=tok/          rows, fields, words (and tokens) per record
    lmlab data compare storyworld/pretrain tinystories out=cmp/
                                                         rank–frequency plot, OOV rate, JS divergence

Words are lower-cased runs of letters/digits; each CJK character counts as one word, so the same
numbers make sense for Chinese corpora, which have no spaces to split on.
"""
from __future__ import annotations

import io
import math
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

CJK = "\u3400-\u9fff\uf900-\ufaff"
WORD = re.compile(rf"[{CJK}]|[^\W_{CJK}]+(?:'[^\W_{CJK}]+)*")


def words(text: str) -> list[str]:
    """Lower-cased words; CJK characters one by one ("don't" stays one word)."""
    return WORD.findall(text.lower())


def word_counts(texts: Sequence[str]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(words(text))
    return counts


def summary(values: Sequence[float]) -> dict[str, float]:
    """mean, min, median, p90, p99, max of a list of lengths (zeros when empty)."""
    if not values:
        return {"mean": 0.0, "min": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    arr = np.asarray(values, dtype=float)
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {"mean": float(arr.mean()), "min": float(arr.min()), "p50": float(p50), "p90": float(p90),
            "p99": float(p99), "max": float(arr.max())}


def text_stats(texts: Sequence[str], tokenizer: Any = None) -> dict[str, Any]:
    """Sizes and length distributions of a list of documents (tokens only if a tokenizer is given)."""
    counts = word_counts(texts)
    out: dict[str, Any] = {
        "texts": len(texts),
        "chars": summary([len(t) for t in texts]),
        "words": summary([len(words(t)) for t in texts]),
        "total_words": sum(counts.values()),
        "vocabulary": len(counts),
        "distinct_texts": len(set(texts)),
    }
    if tokenizer is not None:
        lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        out["tokens"] = summary(lengths)
        out["total_tokens"] = sum(lengths)
    return out


def field_counts(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """How many rows carry each field (a field missing from some rows shows up here)."""
    counts: Counter[str] = Counter()
    for row in rows:
        counts.update(str(k) for k in row)
    return dict(counts)


# -- comparing two corpora ----------------------------------------------------------------------------
def compare_counts(a: Counter[str], b: Counter[str], top_k: int = 20) -> dict[str, Any]:
    """Word-distribution comparison of corpus B against corpus A.

    - oov_rate: share of B's word occurrences whose word never occurs in A (tokens);
      oov_type_rate: share of B's distinct words absent from A.
    - jsd: Jensen–Shannon divergence of the two unigram distributions over the union vocabulary,
      in bits (base 2, so 0 = identical, 1 = disjoint): `scipy.spatial.distance.jensenshannon(p, q,
      base=2) ** 2` (scipy returns the JS *distance*, the square root; reported as js_distance).
    - top_differences: the words whose relative frequency differs most, |p_B(w) - p_A(w)|.
    """
    from scipy.spatial.distance import jensenshannon

    na, nb = sum(a.values()), sum(b.values())
    if na == 0 or nb == 0:
        from lmlab.errors import DataError

        raise DataError(f"cannot compare corpora: corpus {'A' if na == 0 else 'B'} has no words")
    vocab = sorted(set(a) | set(b))
    p = np.array([a[w] / na for w in vocab])
    q = np.array([b[w] / nb for w in vocab])
    distance = float(jensenshannon(p, q, base=2))
    oov_tokens = sum(c for w, c in b.items() if w not in a)
    order = np.argsort(-np.abs(q - p), kind="stable")  # ties: alphabetical, as vocab is sorted
    diffs = [vocab[i] for i in order]
    top = [
        {"word": w, "freq_a": a[w] / na, "freq_b": b[w] / nb, "diff": b[w] / nb - a[w] / na}
        for w in diffs[:top_k]
    ]
    return {
        "words_a": na, "words_b": nb, "vocab_a": len(a), "vocab_b": len(b),
        "shared_vocab": len(set(a) & set(b)),
        "oov_rate": oov_tokens / nb,
        "oov_type_rate": sum(1 for w in b if w not in a) / len(b),
        "jsd": distance**2,
        "js_distance": distance,
        "top_differences": top,
    }


def plot_rank_frequency(counts: dict[str, Counter[str]], out: str | Path, title: str = "Rank–frequency (Zipf) plot") -> Path:
    """Log-log rank vs relative frequency of each corpus' words; Zipf's law is a straight line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lmlab.runs import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for name, c in counts.items():
        total = sum(c.values())
        freqs = sorted((v / total for v in c.values()), reverse=True)
        ax.loglog(range(1, len(freqs) + 1), freqs, label=f"{name} ({len(freqs):,} distinct words)", linewidth=1.6)
    ax.set_xlabel("rank of word (most frequent = 1)")
    ax.set_ylabel("relative frequency")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(out, buf.getvalue())


def entropy_bits(counts: Counter[str]) -> float:
    """Unigram entropy in bits per word (a rough measure of lexical variety)."""
    total = sum(counts.values())
    return -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0
