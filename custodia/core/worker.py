"""The background worker: delivers the outbox continuously and runs periodic jobs.

``custodia worker`` runs one in the foreground; ``custodia serve`` in development runs one in
a thread beside the server. Several workers may run against PostgreSQL at once (the
outbox is claimed with SKIP LOCKED; periodic jobs are written to be safe to run twice).

The worker takes its work in turns of about ``job_slice_s`` each: outbox batches while they
come full, then a slice of each periodic job that is due (a job stops after the step that
crosses its deadline). So a job with a large backlog (sealing the audit events of a bulk
load, a review of every customer) shares the worker with the outbox, and with it AML
monitoring, instead of holding it up (issue 7): a worker that sealed 700,000 audit events
in one go evaluated no transfer for the 30 s it took.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from custodia.core.logging import bind_context, clear_context, get_logger
from custodia.core.outbox import OutboxProcessor

_log = get_logger("custodia.worker")


@dataclass(frozen=True, slots=True)
class Slice:
    """What one run of a job did, and whether it stopped at its deadline with work left."""

    done: int
    more: bool = False


#: One bounded step of a job (one transaction): how much it did, and whether more may remain.
Step = Callable[[], tuple[int, bool]]


def in_slices(step: Step) -> Callable[[float], Slice]:
    """Return a job that repeats ``step`` until it has no more or a deadline has passed.

    The deadline is a :func:`time.monotonic` instant; the step that crosses it completes.
    """

    def run(deadline: float) -> Slice:
        total = 0
        while True:
            done, more = step()
            total += done
            if not more:
                return Slice(total)
            if time.monotonic() >= deadline:
                return Slice(total, more=True)

    return run


def to_the_end(step: Step) -> int:
    """Repeat ``step`` until it has no more; return how much it did in all."""
    return in_slices(step)(math.inf).done


@dataclass
class PeriodicJob:
    """A job run every ``interval_s`` seconds, given the deadline of its slice.

    A job that stops at its deadline with work left runs again right after the next outbox
    batch, not an interval later.
    """

    name: str
    interval_s: float
    run: Callable[[float], Slice]
    next_due: float = 0.0


class Worker:
    """Loops until ``stop`` is set, never letting one failing job stop the others."""

    def __init__(
        self,
        *,
        outbox: OutboxProcessor,
        periodic: list[PeriodicJob],
        poll_interval_s: float,
        stop: threading.Event,
        job_slice_s: float = 0.25,
    ) -> None:
        self.outbox = outbox
        self.periodic = periodic
        self.poll_interval_s = poll_interval_s
        self.stop = stop
        self.job_slice_s = job_slice_s
        self._unfinished = False  # a job stopped at its deadline with work left
        self._last_batch = 0  # the size of the last outbox batch

    def _batch(self) -> int:
        return self._guarded("outbox", lambda: Slice(self.outbox.process_batch())).done

    def run_once(self) -> int:
        """Deliver outbox batches for a slice, then run a slice of each periodic job due.

        The outbox's slice ends early with a batch that was not full (nothing more waits).
        """
        deadline = time.monotonic() + self.job_slice_s
        handled = self._last_batch = self._batch()
        while self._last_batch >= self.outbox.batch_size and time.monotonic() < deadline:
            self._last_batch = self._batch()
            handled += self._last_batch
        self._unfinished = False
        for job in self.periodic:
            now = time.monotonic()
            if now >= job.next_due:
                deadline = now + self.job_slice_s
                ran = self._guarded(job.name, partial(job.run, deadline))
                job.next_due = now if ran.more else now + job.interval_s
                self._unfinished |= ran.more
        return handled

    def run_forever(self) -> None:
        """Work until stopped; pause only after a partly full batch, with no job unfinished."""
        _log.info("worker_started", jobs=[job.name for job in self.periodic])
        while not self.stop.is_set():
            self.run_once()
            pause = 0.0 if self._unfinished else self.pause_after(self._last_batch)
            if pause:
                self.stop.wait(pause)
        _log.info("worker_stopped")

    def pause_after(self, handled: int) -> float:
        """Return how long to wait after a batch of ``handled`` events before the next poll.

        The whole poll interval after an empty batch, none after a full one, and in
        between the share of the interval that the batch left empty: the fuller the
        batches, the busier the outbox and the sooner the next one fills. Under a steady
        load the pause settles where a batch is nearly full, so an event waits a fraction
        of the interval rather than all of it (issue 7: the monitoring lag; a fixed
        half-second pause made the lag a saw-tooth up to ~0.9 s at 600 transfers/s),
        while an idle outbox is still polled once per interval.
        """
        empty = max(0, self.outbox.batch_size - handled) / self.outbox.batch_size
        return self.poll_interval_s * empty

    def _guarded(self, name: str, job: Callable[[], Slice]) -> Slice:
        bind_context(job=name)
        try:
            ran = job()
        except Exception:  # noqa: BLE001 - one failing job must not stop the worker
            _log.exception("job_failed")
            return Slice(0)
        finally:
            clear_context()
        if ran.done:
            _log.debug("job_done", count=ran.done, more=ran.more)
        return ran
