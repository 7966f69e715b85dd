"""Progress bars for long work: one helper so every long loop looks and behaves the same."""

from __future__ import annotations

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


def make_progress(transient: bool = True) -> Progress:
    return Progress(
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
