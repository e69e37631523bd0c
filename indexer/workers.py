"""Run per-file work in worker processes that a bad file cannot take down with the run.

Each file is read in a worker process (pebble's ``ProcessPool``): a file that makes the
reader crash the process (a segfault in a C extension, the out-of-memory killer) or run
past the per-file time limit costs that worker, which is replaced, and that file alone,
which comes back with a one-line reason. Everything else in flight carries on.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import signal
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 1800.0  # per file: a 72 h recording at 1 kHz is read and preprocessed well within it


def auto_jobs(n_jobs: int | str = "auto") -> int:
    """Reader processes for ``n_jobs``: ``"auto"`` is one per four cores (at least one).

    Reading and preprocessing take about a tenth of the embedding's time per recording
    (bench/), so the embedding process keeps most cores for its torch threads.
    """
    if n_jobs == "auto":
        return max(1, (os.cpu_count() or 1) // 4)
    return int(n_jobs)


def failure_reason(err: BaseException, timeout: float | None = None) -> str:
    """One line saying why a worker gave no result for a file."""
    from pebble import ProcessExpired

    if isinstance(err, concurrent.futures.TimeoutError):
        return f"took longer than the per-file time limit of {timeout:g} s; its worker was stopped"
    if isinstance(err, ProcessExpired):
        code = err.exitcode
        if code is not None and code < 0:
            try:
                how = f"signal {signal.Signals(-code).name}"
            except ValueError:
                how = f"signal {-code}"
        else:
            how = f"exit code {code}"
        return f"the worker process reading it died ({how})"
    text = str(err).strip().splitlines()
    return f"unexpected {type(err).__name__}{': ' + text[0] if text else ''}"


def run_isolated(fn: Callable[..., T], jobs: Iterable[tuple[Any, tuple]], n_jobs: int = 1,
                 timeout: float | None = DEFAULT_TIMEOUT_S) -> Iterator[tuple[Any, T | None, str | None]]:
    """Run ``fn(*args)`` for each ``(tag, args)`` of ``jobs``; yield ``(tag, result, error)`` as each ends.

    Parameters
    ----------
    fn : callable
        A picklable function; its exceptions become ``error`` strings.
    jobs : iterable of (tag, args)
        ``tag`` is handed back untouched (it never travels to a worker).
    n_jobs : int
        Worker processes; 0 runs everything in this process (no time limit, no crash isolation).
    timeout : float | None
        Seconds one call may take in a worker before the worker is killed.

    Yields
    ------
    tag, result, error
        Exactly one of ``result`` and ``error`` is None (``error`` is one line).
    """
    if n_jobs <= 0:
        for tag, args in jobs:
            try:
                yield tag, fn(*args), None
            except Exception as err:  # noqa: BLE001 -- one file's failure never stops the run
                logger.debug("%s failed", tag, exc_info=True)
                yield tag, None, failure_reason(err)
        return
    from pebble import ProcessPool

    queue = iter(jobs)
    pending: dict = {}
    with ProcessPool(max_workers=n_jobs) as pool:
        try:
            while True:
                # two per worker in flight: the next file is ready as soon as a worker frees up
                while len(pending) < 2 * n_jobs and (nxt := next(queue, None)) is not None:
                    tag, args = nxt
                    pending[pool.schedule(fn, args, timeout=timeout)] = tag
                if not pending:
                    break
                done, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
                for fut in done:
                    tag = pending.pop(fut)
                    try:
                        yield tag, fut.result(), None
                    except Exception as err:  # noqa: BLE001
                        yield tag, None, failure_reason(err, timeout)
        finally:
            for fut in pending:
                fut.cancel()
            pool.stop()
            pool.join()
