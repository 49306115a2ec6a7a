"""The lab's job queue: attacks run one at a time on a worker thread, off the request threads.

Jobs wait in FIFO order, can be cancelled while queued or running (a running attack stops at its
next progress callback), and publish events that the server streams as server-sent events, per
job or for all jobs on one stream (a browser holds few connections per host).
One worker, because the engine shares cached models (and their hooks) between jobs and a CPU
has no spare cores to give a second attack."""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import IdlsecError

log = logging.getLogger("idlsec.lab")

FINISHED = ("done", "failed", "cancelled")


class JobCancelled(Exception):
    """Raised inside a running job by its progress callback once it has been cancelled."""


class QueueFull(Exception):
    pass


@dataclass
class Job:
    kind: str
    label: str
    work: Callable[[str, Callable], Any]  # work(job_id, report(done, total, message))
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    state: str = "queued"
    done: int = 0
    total: int = 0
    message: str = ""
    error: str | None = None
    result: Any = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    cancel_requested: bool = False
    events: list[tuple[int, str, dict]] = field(default_factory=list)

    @property
    def finished_(self) -> bool:
        return self.state in FINISHED

    def progress(self, done: int, total: int, message: str = "") -> None:
        """Called from the engine's callbacks; raises JobCancelled once cancelled."""
        if self.cancel_requested:
            raise JobCancelled()
        self.done, self.total = int(done), int(total)
        if message:
            self.message = message


class JobQueue:
    """FIFO queue with one worker thread; keeps the last ``keep`` finished jobs."""

    def __init__(self, *, max_queued: int = 32, keep: int = 100, start: bool = True):
        self.max_queued = max_queued
        self.keep = keep
        self._jobs: dict[str, Job] = {}
        self._pending: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._seq = itertools.count(1)  # event ids start at 1: Last-Event-ID 0 means "from the start"
        self._log: collections.deque[tuple[int, str, str, dict]] = collections.deque(maxlen=5000)  # all jobs
        self._stop = False
        self._worker = threading.Thread(target=self._loop, name="idlsec-lab-worker", daemon=True)
        if start:  # start=False: jobs stay queued (to test the HTTP layer alone)
            self._worker.start()

    # --- public --------------------------------------------------------------------------------
    def submit(self, kind: str, label: str, work: Callable[[str, Callable], Any]) -> Job:
        with self._cond:
            if len(self._pending) >= self.max_queued:
                raise QueueFull(f"{len(self._pending)} jobs are already queued (limit {self.max_queued}); "
                                "wait or cancel some")
            job = Job(kind=kind, label=label, work=work)
            self._jobs[job.id] = job
            self._pending.append(job)
            self._emit(job, "state")
            self._prune()
            self._cond.notify_all()
        return job

    @property
    def stopped(self) -> bool:
        return self._stop

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def jobs(self) -> list[Job]:
        return sorted(self._jobs.values(), key=lambda j: j.created, reverse=True)

    def position(self, job: Job) -> int | None:
        with self._cond:
            try:
                return self._pending.index(job)
            except ValueError:
                return None

    def cancel(self, job_id: str) -> Job | None:
        with self._cond:
            job = self._jobs.get(job_id)
            if job is None or job.finished_:
                return job
            job.cancel_requested = True
            if job.state == "queued":
                self._pending.remove(job)
                self._finish(job, "cancelled")
            self._cond.notify_all()
            return job

    @property
    def last_seq(self) -> int:
        with self._cond:
            return self._log[-1][0] if self._log else -1

    def all_events_since(self, seq: int) -> list[tuple[int, str, str, dict]]:
        """Events of every job after ``seq``: (seq, job id, event, data)."""
        with self._cond:
            return [e for e in self._log if e[0] > seq]

    def wait_any(self, seq: int, timeout: float) -> None:
        """Block until any job has an event after ``seq`` or ``timeout`` passes."""
        with self._cond:
            self._cond.wait_for(lambda: (self._log and self._log[-1][0] > seq) or self._stop, timeout)

    def events_since(self, job: Job, seq: int) -> list[tuple[int, str, dict]]:
        with self._cond:
            return [e for e in job.events if e[0] > seq]

    def wait(self, job: Job, seq: int, timeout: float) -> None:
        """Block until ``job`` has an event after ``seq`` or ``timeout`` passes."""
        with self._cond:
            self._cond.wait_for(lambda: (job.events and job.events[-1][0] > seq) or self._stop, timeout)

    def wait_finished(self, job: Job, timeout: float = 60.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: job.finished_, timeout)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Cancel everything and stop the worker."""
        with self._cond:
            for job in list(self._pending):
                job.cancel_requested = True
                self._finish(job, "cancelled")
            self._pending.clear()
            for job in self._jobs.values():
                if job.state == "running":
                    job.cancel_requested = True
            self._stop = True
            self._cond.notify_all()
        if self._worker.is_alive():
            self._worker.join(timeout)

    # --- internals -------------------------------------------------------------------------------
    def _emit(self, job: Job, event: str, **data) -> None:
        payload = {"state": job.state, "done": job.done, "total": job.total, "message": job.message, **data}
        if job.error:
            payload["error"] = job.error
        seq = next(self._seq)
        job.events.append((seq, event, payload))
        self._log.append((seq, job.id, event, {"job": job.id, "kind": job.kind, **payload}))
        # a long attack emits thousands of progress events; a late subscriber needs only the last
        if len(job.events) > 200:
            job.events[:] = job.events[:1] + job.events[-100:]

    def _finish(self, job: Job, state: str, error: str | None = None) -> None:
        job.state, job.error, job.finished = state, error, time.time()
        job.work = None  # drop references to tensors captured by the closure
        self._emit(job, "end")

    def _prune(self) -> None:
        finished = [j for j in self._jobs.values() if j.finished_]
        for j in sorted(finished, key=lambda j: j.created)[:max(0, len(finished) - self.keep)]:
            del self._jobs[j.id]

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._stop)
                if self._stop:
                    return
                job = self._pending.popleft()
                job.state, job.started = "running", time.time()
                self._emit(job, "state")
                self._cond.notify_all()
            last = [0.0]

            def report(done, total, message="", job=job, last=last):
                job.progress(done, total, message)
                now = time.monotonic()
                if now - last[0] > 0.05 or done == total:  # at most ~20 events a second
                    last[0] = now
                    with self._cond:
                        self._emit(job, "progress")
                        self._cond.notify_all()

            try:
                result = job.work(job.id, report)
            except JobCancelled:
                state, error, result = "cancelled", None, None
            except IdlsecError as e:
                state, error, result = "failed", str(e), None
            except Exception as e:  # a bug in the engine: report it in the job, keep the server up
                log.exception("lab job %s failed", job.id)
                state, error, result = "failed", f"internal error: {type(e).__name__}: {e}", None
            else:
                state, error = ("cancelled", None) if job.cancel_requested else ("done", None)
            with self._cond:
                job.result = result if state == "done" else None
                self._finish(job, state, error)
                self._cond.notify_all()
