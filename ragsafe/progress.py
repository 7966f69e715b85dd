"""Progress bars for long work: one helper so every long loop looks and behaves the same."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import TypeVar

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")


class _LoggingProgress(Progress):
    """A rich Progress that, when output is not a terminal (a log file, CI), prints a plain status line
    at most every `interval` seconds instead of staying silent until the end."""

    interval = 30.0

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._last_line = 0.0

    def update(self, task_id, **kwargs) -> None:
        super().update(task_id, **kwargs)
        self._maybe_log(task_id)

    def advance(self, task_id, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._maybe_log(task_id)

    def _maybe_log(self, task_id) -> None:
        if self.console.is_terminal:
            return
        now = time.monotonic()
        task = self._tasks[task_id]
        if task.visible and (now - self._last_line >= self.interval or task.finished):
            self._last_line = now
            remaining = f", ~{task.time_remaining / 60:.1f} min left" if task.time_remaining else ""
            info = task.fields.get("info", "")
            self.console.print(f"{task.description}: {task.completed:.0f}/{task.total:.0f}{remaining} {info}")


def make_progress(transient: bool = True) -> Progress:
    return _LoggingProgress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        transient=transient,
    )


def progress_batches(
    items: Sequence[T], batch_size: int, show: bool | None = None, description: str = "working"
) -> Iterator[list[T]]:
    """Yield `items` in batches, with a bar when `show` is True (None: only when there are > 2 batches)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batches = [list(items[i : i + batch_size]) for i in range(0, len(items), batch_size)]
    if show is None:
        show = len(batches) > 2
    if not show:
        yield from batches
        return
    with make_progress() as progress:
        task = progress.add_task(description, total=len(items), info="")
        for batch in batches:
            yield batch
            progress.advance(task, len(batch))
