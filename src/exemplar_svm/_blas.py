"""numpy's BLAS threads: how many there are, and one at a time while searches share the cores."""

from __future__ import annotations

import threading
from typing import Any

_CONTROLLER: Any = None


def _controller() -> Any:
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER


def blas_threads() -> int:
    """How many threads numpy's BLAS runs on now (a few µs: the controller is cached)."""
    libraries = _controller().select(user_api="blas").lib_controllers
    return max([library.num_threads for library in libraries], default=1)


class OneBlasThread:
    """While any user is inside, numpy's BLAS runs on one thread.

    For work that brings its own parallelism: a batch of searches spread over the cores, or a
    vector store's engine scanning on the same cores right after each solve (BLAS worker
    threads spin for a while after their last task: measured with FAISS on 2 cores, its scans
    took 30% longer after a solve on two BLAS threads, more than the solves, of tens of
    thousands of rows, lose on one). The limit is process-wide (threadpoolctl), so concurrent
    users share it: the first one in sets it and the last one out restores the previous setting.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._limiter: Any = None

    def __enter__(self) -> None:
        with self._lock:
            if self._users == 0:
                self._limiter = _controller().limit(limits=1, user_api="blas")
            self._users += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._limiter is not None:
                self._limiter.restore_original_limits()
                self._limiter = None


ONE_BLAS_THREAD = OneBlasThread()
