"""Progress bars (rich) with rate and ETA; silent in quiet mode.

Quiet mode is on when `LMLAB_QUIET=1` (set by `--quiet`) or when stdout is not a terminal and
`CI` is set, so CI logs stay readable. An explicit `LMLAB_QUIET=0` wins over `CI`.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def is_quiet() -> bool:
    setting = os.environ.get("LMLAB_QUIET")
    if setting in ("0", "1"):
        return setting == "1"
    return bool(os.environ.get("CI")) and not sys.stdout.isatty()


def console() -> Console:
    return Console(stderr=True, quiet=is_quiet())


class Bar:
    """A handle that advances a rich task and shows extra fields (loss, tokens/s)."""

    def __init__(self, progress: Progress | None, task: Any):
        self._progress = progress
        self._task = task

    def update(self, advance: float = 1, **fields: Any) -> None:
        if self._progress is not None:
            text = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
            self._progress.update(self._task, advance=advance, info=text)


@contextmanager
def progress_bar(total: int | None, description: str) -> Iterator[Bar]:
    """`with progress_bar(n, "pretrain") as bar: bar.update(1, loss=2.3, tok_s=1e4)`."""
    if is_quiet():
        yield Bar(None, None)
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console(),
        transient=False,
    )
    with progress:
        task = progress.add_task(description, total=total, info="")
        yield Bar(progress, task)


def log(message: str) -> None:
    """A status line on stderr (hidden in quiet mode)."""
    console().print(message, highlight=False)
