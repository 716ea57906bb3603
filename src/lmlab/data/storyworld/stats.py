"""How big the storyworld is: distinct stories in N draws, vocabulary, arcs, names.

`world_stats` backs `lmlab data stats storyworld/pretrain` and bench/storyworld_stats.py; it answers
"will a model just memorise this?" with numbers instead of a claim.
"""
from __future__ import annotations

import random
import time

from lmlab.data.storyworld import vocab
from lmlab.data.storyworld.arcs import ARCS
from lmlab.data.storyworld.generator import generate_story
from lmlab.data.storyworld.judge import vocabulary


def world_stats(draws: int = 20000, seed: int = 0) -> dict:
    """Draw `draws` stories from one seed and count what is distinct (texts hashed in memory)."""
    rng = random.Random(f"storyworld/pretrain/{seed}")
    seen: set[int] = set()
    words = sentences = 0
    start = time.perf_counter()
    for _ in range(draws):
        story = generate_story(rng)
        seen.add(hash(story.text))
        sentences += len(story.sentences)
        words += len(story.text.split())
    elapsed = time.perf_counter() - start
    return {
        "draws": draws,
        "distinct_stories": len(seen),
        "distinct_fraction": len(seen) / max(draws, 1),
        "vocabulary_size": len(vocabulary()),
        "arcs": len(ARCS),
        "names": len(vocab.NAMES),
        "kinds": len(vocab.KINDS),
        "places": len(vocab.PLACES),
        "objects": len(vocab.OBJECTS),
        "mean_sentences": sentences / max(draws, 1),
        "mean_words": words / max(draws, 1),
        "stories_per_s": draws / elapsed if elapsed > 0 else 0.0,
    }
