"""The run's log: metrics.jsonl rows and TensorBoard scalars, written by the main process only.

Rows are plain dicts with at least `step` and `split` ("train" / "val"), or an `event` (a key
changed on resume). A train row is the weighted mean over its log window; the window's sums live in
`TrainerState`, so a row that spans a checkpoint is the same after a resume.

TensorBoard scalars are buffered and written at each checkpoint and at the end (`flush`), each
time by a writer that is closed again, so no writer thread lives through the training steps. (A
live writer was once suspected of slowing small recurrent models; quiet measurements later showed
that slowdown to be timing noise, see docs/performance.md. Writing at checkpoints costs nothing
either way and keeps the event files in step with the checkpoints a resume returns to.)
metrics.jsonl, written at every row, stays the record a kill cannot lose; after a resume the
events logged after the checkpoint are purged (purge_step = checkpoint step + 1).
"""
from __future__ import annotations

from typing import Any

from lmlab.runs import RunDir


class Logbook:
    """metrics.jsonl + TensorBoard (`tb/`) for one run; a no-op on non-main processes."""

    def __init__(self, run: RunDir, main: bool, purge_step: int | None = None):
        self.run, self.main = run, main
        self.purge_step = purge_step  # on resume: TensorBoard drops events logged after it
        self.pending: list[tuple[str, float, int]] = []

    def _writer(self, purge_step: int | None) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # pragma: no cover - tensorboard is a dependency, but stay usable without it
            return None
        return SummaryWriter(log_dir=str(self.run.tb_dir), purge_step=purge_step)

    def write(self, row: dict[str, Any]) -> None:
        """Append `row` to metrics.jsonl; queue its numbers for TensorBoard as `<split>/<key>`."""
        if not self.main:
            return
        self.run.log_metrics(row)
        if "split" not in row:
            return
        for k, v in row.items():
            if k not in ("step", "split") and isinstance(v, (int, float)) and not isinstance(v, bool):
                self.pending.append((f"{row['split']}/{k}", float(v), int(row["step"])))

    def flush(self) -> None:
        """Write the queued scalars to an event file in tb/ and close its writer."""
        if not self.main or not self.pending:
            return
        writer = self._writer(self.purge_step)
        if writer is not None:
            for tag, value, step in self.pending:
                writer.add_scalar(tag, value, step)
            writer.close()
        self.purge_step = None
        self.pending = []

    def close(self) -> None:
        self.flush()
