"""A writer's lock that copies and pickles, for objects that are copied and pickled."""

from __future__ import annotations

import threading
from types import TracebackType


class WriteLock:
    """A ``threading.Lock`` (a context manager) that copies and pickles as a new, unlocked one.

    It serialises one object's writers. A deep copy or an unpickled copy of that object is a
    new object with writers of its own, so it gets a fresh lock; ``threading.Lock`` itself
    cannot be copied or pickled at all, and the indexes and retrievers that hold this lock can.
    A shallow copy of the holder shares its lock, as it shares the rest of its state.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._lock.release()

    def __reduce__(self) -> tuple[type[WriteLock], tuple[()]]:
        return (type(self), ())

    def __deepcopy__(self, memo: dict[int, object]) -> WriteLock:
        return type(self)()

    def __repr__(self) -> str:
        return f"WriteLock(locked={self._lock.locked()})"
