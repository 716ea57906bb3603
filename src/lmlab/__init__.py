"""lmlab: the whole life of a small language model, on a laptop CPU first.

Every CLI command is also a function with the same keys (see `lmlab.api`).
"""
from lmlab.api import call, evaluate, generate, quickstart, run, train

__all__ = ["call", "evaluate", "generate", "quickstart", "run", "train"]
__version__ = "0.1.0"
