"""The lab's job queue: attacks run one at a time on a worker thread, off the request threads.

Jobs wait in FIFO order, can be cancelled while queued or running (a running attack stops at its
next progress callback), and publish events that the server streams as server-sent events, per
job or for all jobs on one stream (a browser holds few connections per host).
With a ``LabStore`` every job is written when it is queued, starts and ends (with its request and
result), so a restarted server lists it again; a job left queued or running by a server that died
is 'interrupted' and can be run again from its saved request. Event ids grow across restarts
(they start at the start time in microseconds), so a browser's ``Last-Event-ID`` from the
previous server never hides the new server's events.
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

FINISHED = ("done", "failed", "cancelled", "interrupted")


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
    request: dict | None = None  # what re-runs it (the validated request, as JSON)
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

    def __init__(self, *, max_queued: int = 32, keep: int = 100, start: bool = True, store=None):
        self.max_queued = max_queued
        self.keep = keep
        self.store = store
        self.interrupted = 0  # jobs a previous server left queued or running
        self._jobs: dict[str, Job] = {}
        self._pending: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        # event ids > 0 (Last-Event-ID 0 means "from the start"), beyond a previous server's
        self._seq = itertools.count(time.time_ns() // 1000)
        self._log: collections.deque[tuple[int, str, str, dict]] = collections.deque(maxlen=5000)  # all jobs
        self._stop = False
        self._worker = threading.Thread(target=self._loop, name="idlsec-lab-worker", daemon=True)
        if store is not None:
            self.interrupted = store.mark_interrupted()
            for row in reversed(store.jobs(keep)):
                row.pop("request", None)
                job = Job(work=None, **row)
                self._jobs[job.id] = job
        if start:  # start=False: jobs stay queued (to test the HTTP layer alone)
            self._worker.start()

    # --- public --------------------------------------------------------------------------------
    def submit(self, kind: str, label: str, work: Callable[[str, Callable], Any],
               request: dict | None = None) -> Job:
        with self._cond:
            if len(self._pending) >= self.max_queued:
                raise QueueFull(f"{len(self._pending)} jobs are already queued (limit {self.max_queued}); "
                                "wait or cancel some")
            job = Job(kind=kind, label=label, work=work, request=request)
            if self.store is not None:
                self.store.insert_job(job, request)
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
        job = self._jobs.get(job_id)
        if job is None and self.store is not None:  # an older job, beyond the ones kept in memory
            row = self.store.job(job_id)
            if row is not None:
                row.pop("request", None)
                job = Job(work=None, **row)
        return job

    def jobs(self) -> list[Job]:
        with self._cond:
            return sorted(self._jobs.values(), key=lambda j: j.created, reverse=True)

    def result(self, job: Job) -> Any:
        """A done job's result: in memory, else from the store (a job of an earlier server)."""
        if job.result is None and job.state == "done" and self.store is not None:
            job.result = self.store.result(job.id)
        return job.result

    def request(self, job: Job) -> dict | None:
        if job.request is None and self.store is not None:
            job.request = self.store.request(job.id)
        return job.request

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
                return job or self.get(job_id)  # an old job, from the store: ended already
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

    def shutdown(self, timeout: float = 2.0) -> None:
        """Stop the worker: queued jobs and the running one end 'interrupted' (they can be run
        again); the running one is asked to stop at its next step and waited for ``timeout`` s.
        Event streams see ``stopped`` and close. Safe to call again (it waits again)."""
        error = "the server stopped before the job ended; run it again"
        with self._cond:
            for job in list(self._pending):
                job.cancel_requested = True
                self._finish(job, "interrupted", error)
            self._pending.clear()
            running = [j for j in self._jobs.values() if j.state == "running"]
            for job in running:
                job.cancel_requested = True
            self._stop = True
            self._cond.notify_all()
        if self._worker.is_alive():
            self._worker.join(timeout)
        with self._cond:  # a step that did not return in time: its thread dies with the process
            for job in running:
                if not job.finished_:
                    self._finish(job, "interrupted", error)
            self._cond.notify_all()

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

    def _finish(self, job: Job, state: str, error: str | None = None, result: Any = None) -> None:
        job.state, job.error, job.finished = state, error, time.time()
        job.result = result if state == "done" else None
        job.work = None  # drop references to tensors captured by the closure
        self._save(job, job.result)
        self._emit(job, "end")

    def _save(self, job: Job, result: Any = None) -> None:
        if self.store is None:
            return
        try:
            self.store.update_job(job, result)
        except Exception:  # a full disk must not kill the worker: the job still ends in memory
            log.exception("lab job %s: cannot save it", job.id)

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
                self._save(job)
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
                if job.finished_:  # shutdown gave up waiting and marked it interrupted
                    continue
                if state == "cancelled" and self._stop:
                    state, error = "interrupted", "the server stopped before the job ended; run it again"
                self._finish(job, state, error, result)
                self._cond.notify_all()
