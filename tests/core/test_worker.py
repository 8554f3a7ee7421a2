"""The background worker's loop: how long it pauses between outbox polls."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest

from custodia.core.worker import Worker


@dataclass
class _Outbox:
    """Hands out batches of the given sizes, one per call."""

    sizes: list[int]
    batch_size: int = 100

    def process_batch(self) -> int:
        return self.sizes.pop(0)


class _Stop(threading.Event):
    """A stop event that records the pauses and is set once the outbox has no batch left."""

    def __init__(self, outbox: _Outbox) -> None:
        super().__init__()
        self.outbox = outbox
        self.pauses: list[float] = []

    def is_set(self) -> bool:
        return not self.outbox.sizes

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self.pauses.append(timeout)
        return False


def test_the_pause_shrinks_as_the_batches_fill() -> None:
    """Full interval when idle, none after a full batch, the empty share in between."""
    outbox = _Outbox([0, 50, 100, 90, 100, 1])
    stop = _Stop(outbox)
    Worker(outbox=outbox, periodic=[], poll_interval_s=0.5, stop=stop).run_forever()  # type: ignore[arg-type] # a stand-in outbox
    assert stop.pauses == pytest.approx([0.5, 0.25, 0.05, 0.495])


def test_a_batch_larger_than_asked_for_never_makes_a_negative_pause() -> None:
    """Several consumers may report more events than the batch size: no pause, never < 0."""
    worker = Worker(outbox=_Outbox([]), periodic=[], poll_interval_s=0.5, stop=threading.Event())  # type: ignore[arg-type]
    assert worker.pause_after(250) == 0
    assert worker.pause_after(0) == 0.5
