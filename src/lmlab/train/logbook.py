"""The run's log: metrics.jsonl rows and TensorBoard scalars, written by the main process only.

Rows are plain dicts with at least `step` and `split` ("train" / "val"), or an `event` (a key
changed on resume). A train row is the weighted mean over its log window; the window's sums live in
`TrainerState`, so a row that spans a checkpoint is the same after a resume.
"""
from __future__ import annotations

from typing import Any

from lmlab.runs import RunDir


class Logbook:
    """metrics.jsonl + TensorBoard (`tb/`) for one run; a no-op on non-main processes."""

    def __init__(self, run: RunDir, main: bool, purge_step: int | None = None):
        self.run, self.main = run, main
        self.writer = self._writer(purge_step) if main else None

    def _writer(self, purge_step: int | None) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # pragma: no cover - tensorboard is a dependency, but stay usable without it
            return None
        return SummaryWriter(log_dir=str(self.run.tb_dir), purge_step=purge_step)

    def write(self, row: dict[str, Any]) -> None:
        """Append `row` to metrics.jsonl and its numbers to TensorBoard as `<split>/<key>`."""
        if not self.main:
            return
        self.run.log_metrics(row)
        if self.writer is None or "split" not in row:
            return
        for k, v in row.items():
            if k not in ("step", "split") and isinstance(v, (int, float)) and not isinstance(v, bool):
                self.writer.add_scalar(f"{row['split']}/{k}", v, row["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
