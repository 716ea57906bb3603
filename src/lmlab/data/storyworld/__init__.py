"""Storyworld: the built-in, offline data of lmlab — seeded stories, tasks over them, a gold judge.

    from lmlab.data.storyworld import make_dataset, gold_reward, judge
    rows = make_dataset("prefs", 100, seed=0)
    judge(rows[0]["prompt"], rows[0]["chosen"]).reward   # > judge(..., rows[0]["rejected"]).reward

See docs/storyworld.md for the tasks, the prompt phrasings and the judge's formula.
"""
from lmlab.data.storyworld.generator import Character, Story, generate_story
from lmlab.data.storyworld.judge import JudgeResult, gold_reward, judge
from lmlab.data.storyworld.prompts import Constraints, parse_constraints
from lmlab.data.storyworld.stats import world_stats
from lmlab.data.storyworld.tasks import TASKS, make_dataset

__all__ = ["TASKS", "Character", "Constraints", "JudgeResult", "Story", "generate_story", "gold_reward", "judge",
           "make_dataset", "parse_constraints", "world_stats"]
