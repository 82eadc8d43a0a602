"""Run a sync call in a shared, bounded set of worker threads and give the
caller control back at its deadline, whatever the call does.

Python cannot stop a thread: a call still running at its deadline is
abandoned and keeps its worker until it returns. Workers are daemon threads
(an abandoned call never holds up interpreter exit) and their number is
bounded, so a hanging service cannot make a process start threads without
end: once every worker is held by an abandoned call, new calls wait in the
queue and, if none is freed before their deadline, are dropped without
having run (``DeadlineExceeded.started`` is False).
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class DeadlineExceeded(Exception):
    def __init__(self, started: bool) -> None:
        self.started = started
        super().__init__("deadline exceeded" if started else "deadline exceeded before a worker "
                         "was free")


class _Job:
    __slots__ = ("args", "claim", "ctx", "done", "error", "fn", "kwargs", "value")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.ctx = contextvars.copy_context()
        # Plain locks are the cheapest one-shot signals: `done` is released by
        # the worker when the call ends; `claim` is taken by whichever comes
        # first, the worker starting the call or the caller giving up on it.
        self.done = threading.Lock()
        self.done.acquire()
        self.claim = threading.Lock()
        self.value: Any = None
        self.error: BaseException | None = None


class DeadlinePool:
    """Worker threads started on demand, at most ``size()`` of them."""

    def __init__(self, size: Callable[[], int], name: str) -> None:
        self._size = size
        self._name = name
        self._queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        # Workers that finished a call and wait for the next, less the calls
        # already queued for them (a plain count under a plain lock: cheaper
        # per call than a threading.Semaphore).
        self._idle = 0
        self.threads = 0

    def run(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any],
            timeout: float) -> T:
        """``fn(*args, **kwargs)`` in a worker; its exception is raised as is.
        At ``timeout`` seconds raises DeadlineExceeded."""
        job = _Job(fn, args, kwargs)
        self._submit(job)
        if not job.done.acquire(True, timeout):
            # Not claimed yet: no worker took it, and none will run it now.
            raise DeadlineExceeded(started=not job.claim.acquire(False))
        if job.error is not None:
            error, job.error = job.error, None
            raise error
        return job.value  # type: ignore[no-any-return]

    def _submit(self, job: _Job) -> None:
        start = False
        with self._lock:
            if self._idle:
                self._idle -= 1
            elif self.threads < max(1, self._size()):
                self.threads += 1
                start = True
        if start:
            threading.Thread(target=self._work, daemon=True,
                             name=f"{self._name}-{self.threads}").start()
        self._queue.put(job)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job.claim.acquire(False):
                try:
                    job.value = job.ctx.run(job.fn, *job.args, **job.kwargs)
                except BaseException as exc:  # handed to the caller, who re-raises it
                    job.error = exc
                finally:
                    job.done.release()
            del job  # an abandoned call's result must not outlive it here
            with self._lock:
                self._idle += 1
