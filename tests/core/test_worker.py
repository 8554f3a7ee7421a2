"""The background worker's loop: its pauses between outbox polls, and its jobs' slices."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

import pytest

from custodia.core.worker import PeriodicJob, Slice, Worker, in_slices, to_the_end


@dataclass
class _Outbox:
    """Hands out batches of the given sizes, one per call."""

    sizes: list[int]
    batch_size: int = 100
    log: list[str] = field(default_factory=list)

    def process_batch(self) -> int:
        self.log.append("outbox")
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


def test_a_job_with_a_backlog_runs_in_slices_between_outbox_batches() -> None:
    """Issue 7: sealing a bulk load's audit events once held up monitoring for 30 s."""
    outbox = _Outbox([0, 0, 0, 0])
    stop = _Stop(outbox)
    deadlines: list[float] = []

    def backlog(deadline: float) -> Slice:
        outbox.log.append("job")
        deadlines.append(deadline)
        return Slice(1, more=len(deadlines) < 3)  # work left after the first two slices

    job = PeriodicJob("seal", interval_s=3600, run=backlog)
    before = time.monotonic()
    Worker(
        outbox=outbox, periodic=[job], poll_interval_s=0.5, stop=stop, job_slice_s=0.25
    ).run_forever()  # type: ignore[arg-type] # a stand-in outbox
    after = time.monotonic()

    assert outbox.log == ["outbox", "job", "outbox", "job", "outbox", "job", "outbox"]
    assert stop.pauses == [0.5, 0.5]  # none while the job had work left
    assert all(before + 0.25 <= d <= after + 0.25 for d in deadlines)


def test_a_failing_job_waits_its_interval() -> None:
    outbox = _Outbox([0, 0, 0])
    calls: list[float] = []

    def broken(deadline: float) -> Slice:
        calls.append(deadline)
        raise RuntimeError("the database went away")

    job = PeriodicJob("seal", interval_s=3600, run=broken)
    Worker(outbox=outbox, periodic=[job], poll_interval_s=0.5, stop=_Stop(outbox)).run_forever()  # type: ignore[arg-type]
    assert len(calls) == 1


def test_a_slice_ends_with_the_step_that_crosses_its_deadline() -> None:
    steps = iter([(2, True), (3, True), (4, False)])
    assert in_slices(lambda: next(steps))(math.inf) == Slice(9, more=False)
    assert in_slices(lambda: (5, True))(time.monotonic() - 1) == Slice(5, more=True)
    steps = iter([(2, True), (0, False)])
    assert to_the_end(lambda: next(steps)) == 2


def test_the_outbox_keeps_its_turn_while_batches_come_full() -> None:
    """Up to a slice of full batches before a job's turn; one batch if the slice is spent."""

    def job(log: list[str]) -> PeriodicJob:
        return PeriodicJob("seal", 0, lambda _: log.append("job") or Slice(1, more=True))  # type: ignore[func-returns-value]

    outbox = _Outbox([100, 100, 100, 40, 0])
    Worker(
        outbox=outbox,
        periodic=[job(outbox.log)],
        poll_interval_s=0.5,
        stop=_Stop(outbox),
        job_slice_s=60,
    ).run_forever()  # type: ignore[arg-type]
    assert outbox.log == ["outbox"] * 4 + ["job", "outbox", "job"]

    outbox = _Outbox([100, 100, 0])
    Worker(
        outbox=outbox,
        periodic=[job(outbox.log)],
        poll_interval_s=0.5,
        stop=_Stop(outbox),
        job_slice_s=0,
    ).run_forever()  # type: ignore[arg-type]
    assert outbox.log == ["outbox", "job"] * 3
