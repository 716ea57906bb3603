"""The Python face of every command, for notebooks: the same keys as the CLI.

    from lmlab import train, evaluate, generate
    run = train("sft", model="runs/quickstart/pt", data="storyworld/instruct", lora={"rank": 16})

Each function validates its keys exactly like the CLI (unknown keys name the closest valid one)
and returns what the command's function returns (a `RunResult` for training stages).
"""
from __future__ import annotations

from typing import Any

from lmlab.cli import COMMANDS, Command
from lmlab.errors import LmlabError


def _command(name: str) -> Command:
    for cmd in COMMANDS:
        if cmd.name == name:
            return cmd
    from lmlab.config import closest

    hint = closest(name, [c.name for c in COMMANDS])
    raise LmlabError(f"unknown command '{name}'" + (f"; did you mean '{hint}'?" if hint else ""))


def call(name: str, *, resume: bool = False, force: bool = False, **keys: Any) -> Any:
    """Run command `name` ('train sft', 'eval ppl', ...) with keyword keys."""
    from lmlab.cli import call as _call

    return _call(_command(name), keys, resume=resume, force=force, where=name)


def train(stage: str, *, resume: bool = False, force: bool = False, **keys: Any) -> Any:
    """`lmlab train STAGE key=value ...`"""
    return call(f"train {stage}", resume=resume, force=force, **keys)


def evaluate(kind: str, **keys: Any) -> Any:
    """`lmlab eval KIND key=value ...`"""
    return call(f"eval {kind}", **keys)


def generate(model: str, **keys: Any) -> Any:
    """`lmlab generate MODEL key=value ...`"""
    return call("generate", model=model, **keys)


def quickstart(**keys: Any) -> Any:
    return call("quickstart", **keys)


def run(recipe: str, *, resume: bool = False, force: bool = False, **overrides: Any) -> Any:
    """`lmlab run RECIPE.yaml stage.key=value ...`"""
    return call("run", recipe=recipe, overrides=overrides, resume=resume, force=force)
