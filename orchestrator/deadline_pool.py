"""Run a sync call in a shared, bounded set of worker threads and give the
caller control back at its deadline, whatever the call does.

Python cannot stop a thread: a call still running at its deadline is
abandoned and keeps its worker until it returns. Workers are daemon threads
(an abandoned call never holds up interpreter exit) and their number is
bounded, so a hanging service cannot make a process start threads without
end: once every worker is held by an abandoned call, new calls wait in the
queue and, if none is freed before their deadline, are dropped without
having run (``DeadlineExceeded.started`` is False).

Calls may name a group (the breaker's circuit key). A group holds at most
``per_group()`` workers, running or queued: the calls of one hanging service
cannot take every worker from the others. A call of a group at its cap waits
for one of the group's calls to end, and is dropped unstarted at its
deadline too.
"""

from __future__ import annotations

import contextvars
import queue
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


class DeadlineExceeded(Exception):
    def __init__(self, started: bool) -> None:
        self.started = started
        super().__init__("deadline exceeded" if started else "deadline exceeded before a worker "
                         "was free")


class _Job:
    __slots__ = ("args", "claim", "ctx", "done", "error", "fn", "group", "kwargs", "value")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any], group: Hashable | None) -> None:
        self.fn, self.args, self.kwargs, self.group = fn, args, kwargs, group
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
    """Worker threads started on demand, at most ``size()`` of them, at
    most ``per_group()`` of them for the calls of one group."""

    def __init__(self, size: Callable[[], int], name: str,
                 per_group: Callable[[], int] | None = None) -> None:
        self._size = size
        self._per_group = per_group or size
        self._name = name
        self._queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        # Signalled when a group at its cap frees a worker (only while a
        # caller waits for one: _waiting).
        self._freed = threading.Condition(self._lock)
        self._waiting = 0
        # Workers that finished a call and wait for the next, less the calls
        # already queued for them (a plain count under a plain lock: cheaper
        # per call than a threading.Semaphore).
        self._idle = 0
        # Calls of each group queued or running (abandoned ones included).
        self._busy: dict[Hashable, int] = {}
        self.threads = 0

    def run(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any],
            timeout: float, group: Hashable | None = None) -> T:
        """``fn(*args, **kwargs)`` in a worker; its exception is raised as is.
        At ``timeout`` seconds raises DeadlineExceeded."""
        job = _Job(fn, args, kwargs, group)
        left = self._submit(job, timeout)
        if left is None:
            raise DeadlineExceeded(started=False)
        if not job.done.acquire(True, left):
            # Not claimed yet: no worker took it, and none will run it now.
            if job.claim.acquire(False):
                if group is not None:
                    with self._lock:
                        self._leave(group)
                raise DeadlineExceeded(started=False)
            raise DeadlineExceeded(started=True)
        if job.error is not None:
            error, job.error = job.error, None
            raise error
        return job.value  # type: ignore[no-any-return]

    def busy(self, group: Hashable) -> int:
        """Calls of ``group`` queued or running now (abandoned ones included)."""
        with self._lock:
            return self._busy.get(group, 0)

    def _submit(self, job: _Job, timeout: float) -> float | None:
        """Queue ``job``; returns the seconds left of ``timeout``, or None
        when its group had no worker to spare before then."""
        start = False
        left = timeout
        with self._lock:
            if job.group is not None:
                held = self._busy.get(job.group, 0)
                if held >= max(1, self._per_group()):
                    left = self._wait_for_group(job.group, timeout)
                    if left is None:
                        return None
                    held = self._busy.get(job.group, 0)
                self._busy[job.group] = held + 1
            if self._idle:
                self._idle -= 1
            elif self.threads < max(1, self._size()):
                self.threads += 1
                start = True
        if start:
            threading.Thread(target=self._work, daemon=True,
                             name=f"{self._name}-{self.threads}").start()
        self._queue.put(job)
        return left

    def _wait_for_group(self, group: Hashable, timeout: float) -> float | None:
        """With the lock held: wait until ``group`` is under its cap."""
        deadline = time.monotonic() + timeout
        self._waiting += 1
        try:
            while self._busy.get(group, 0) >= max(1, self._per_group()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._freed.wait(left)
        finally:
            self._waiting -= 1
        return max(0.0, deadline - time.monotonic())

    def _leave(self, group: Hashable) -> None:
        """With the lock held: one call of ``group`` ended (or was dropped)."""
        held = self._busy[group] - 1
        if held:
            self._busy[group] = held
        else:
            del self._busy[group]
        if self._waiting:
            self._freed.notify_all()

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job.claim.acquire(False):
                try:
                    job.value = job.ctx.run(job.fn, *job.args, **job.kwargs)
                except BaseException as exc:  # handed to the caller, who re-raises it
                    job.error = exc
                finally:
                    # The group's slot is free before the caller can call again.
                    with self._lock:
                        self._idle += 1
                        if job.group is not None:
                            self._leave(job.group)
                    job.done.release()
            else:
                with self._lock:
                    self._idle += 1
            del job  # an abandoned call's result must not outlive it here
