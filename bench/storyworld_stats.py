"""How many distinct stories storyworld makes, and from how many words.

    .venv/bin/python bench/storyworld_stats.py                 # 10^6 draws (a few minutes on one core)
    .venv/bin/python bench/storyworld_stats.py --draws 100000  # quicker; says it measured fewer

Prints one JSON object: distinct stories in the draws, the distinct fraction, vocabulary size,
arcs / names / kinds / places / objects counts, mean sentences and words, stories per second, and
how fast preference pairs are made, how fast the gold judge scores, and how often it prefers `chosen`.
"""
from __future__ import annotations

import argparse
import json
import time

from lmlab.data.storyworld import gold_reward, make_dataset, world_stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=1_000_000, help="stories to draw (default 10^6)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pairs", type=int, default=2000, help="preference pairs to check against the gold judge")
    args = ap.parse_args()
    out = world_stats(draws=args.draws, seed=args.seed)
    start = time.perf_counter()
    rows = make_dataset("prefs", args.pairs, args.seed)
    out["prefs_per_s"] = args.pairs / (time.perf_counter() - start)
    start = time.perf_counter()
    wins = sum(gold_reward(r["prompt"], r["chosen"]) > gold_reward(r["prompt"], r["rejected"]) for r in rows)
    out["judgements_per_s"] = 2 * len(rows) / (time.perf_counter() - start)
    out["gold_prefers_chosen"] = wins / max(len(rows), 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
