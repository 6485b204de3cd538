"""One explanation at a time: a bounded queue of jobs and the worker thread that runs them.

A model holds several feature maps per window in memory, so concurrent requests wait in
line instead of running side by side; a full line is refused (:class:`QueueFull`) rather
than grown without bound. Each job reports its progress window by window.
"""

from __future__ import annotations

import queue
import threading
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from audiointerp.errors import UserError

# The work of one job: called with a progress callback (windows done, windows in all).
Task = Callable[[Callable[[int, int], None]], dict[str, Any]]


class QueueFull(UserError):
    """Too many explanations are waiting; the client should retry later."""


class _Stopped(Exception):
    """Raised from a job's progress callback when the server stops: ends the job early."""


@dataclass
class Job:
    """One queued explanation; ``state`` goes queued -> running -> done | error."""

    task: Task
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: str = "queued"
    windows_done: int = 0
    windows: int = 0
    result: dict[str, Any] | None = None
    error: str | None = None
    status: int = 200  # the HTTP status of the outcome: 400 for a user error, 500 for a bug
    finished: threading.Event = field(default_factory=threading.Event)

    def progress(self, done: int, total: int) -> None:
        self.windows_done, self.windows = min(done, total), total

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready status (with the result once done, the message on error)."""
        status: dict[str, Any] = {
            "job": self.id,
            "state": self.state,
            "windows_done": self.windows_done,
            "windows": self.windows,
        }
        if self.result is not None:
            status["result"] = self.result
        if self.error is not None:
            status["error"] = self.error
        return status


class JobQueue:
    """A worker thread running jobs in submission order, at most ``max_waiting`` queued.

    Jobs stay looked up by id (the last ``max_kept`` of them) so clients can poll them.
    """

    def __init__(self, max_waiting: int = 8, max_kept: int = 64):
        assert max_waiting >= 1 and max_kept >= 1, (max_waiting, max_kept)
        self.pending: queue.Queue[Job | None] = queue.Queue(maxsize=max_waiting)
        self.jobs: dict[str, Job] = {}
        self.max_kept = max_kept
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.worker = threading.Thread(target=self._run, name="audiointerp-explain", daemon=True)

    def start(self) -> None:
        self.worker.start()

    def stop(self) -> None:
        """Cancel the running job at its next window, drop the waiting ones, end the worker."""
        self.stopping.set()
        while True:
            try:
                job = self.pending.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self._finish(job, error="the server is shutting down", status=503)
        self.pending.put(None)
        self.worker.join()

    def submit(self, task: Task) -> Job:
        """Queue ``task``; raises :class:`QueueFull` when ``max_waiting`` jobs already wait."""
        job = Job(task)
        try:
            self.pending.put_nowait(job)
        except queue.Full:
            raise QueueFull(
                f"{self.pending.maxsize} explanations are already waiting; try again shortly"
            ) from None
        with self.lock:
            self.jobs[job.id] = job
            for old in list(self.jobs)[: max(0, len(self.jobs) - self.max_kept)]:
                if self.jobs[old].finished.is_set():
                    del self.jobs[old]
        return job

    def get(self, job_id: str) -> Job | None:
        with self.lock:
            return self.jobs.get(job_id)

    def position(self, job: Job) -> int:
        """Jobs ahead of ``job`` that have not started (0 once it runs)."""
        with self.lock:
            waiting = [j for j in self.jobs.values() if j.state == "queued"]
        return waiting.index(job) if job in waiting else 0

    def _run(self) -> None:
        while (job := self.pending.get()) is not None:
            job.state = "running"

            def progress(done: int, total: int, job: Job = job) -> None:
                if self.stopping.is_set():
                    raise _Stopped
                job.progress(done, total)

            try:
                self._finish(job, result=job.task(progress))
            except _Stopped:
                self._finish(job, error="the server is shutting down", status=503)
            except UserError as error:  # bad audio, a class the method cannot explain...
                self._finish(job, error=str(error), status=400)
            except Exception as error:  # keep serving; the page shows what happened
                traceback.print_exc()
                message = f"internal error: {type(error).__name__}: {error}"
                self._finish(job, error=message, status=500)

    def _finish(
        self,
        job: Job,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        status: int = 200,
    ) -> None:
        job.result, job.error, job.status = result, error, status
        job.state = "error" if error is not None else "done"
        job.finished.set()
