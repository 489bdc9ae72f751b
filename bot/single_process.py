"""One bot process per SQLite database: an OS lock on a file beside it, held while the bot runs.

Two bots on one SQLite file would both answer the messages left queued, and each would tell
people that the other's running answers were lost. The lock (flock) goes away with its process,
however it ends, so a killed bot never blocks the next one. Commands that only read or manage
definitions (`check`, `assistants`, `tools`, `cleanup`) do not take it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from bot.startup import StartupError


class DatabaseLock:
    def __init__(self, database: Path | None) -> None:
        """`database`: the SQLite file; None for PostgreSQL, where processes may be many."""
        self.database = database or Path(":memory:")
        self.path = self.database.with_name(self.database.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Hold the lock, or raise StartupError when another process holds it."""
        if str(self.database) == ":memory:":
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StartupError(
                f"Another bot process is already running on the SQLite database {self.database} "
                f"(it holds {self.path}): with SQLite only one process may run the bot; stop "
                "the other one, or give this one its own DATABASE_URL. Several processes need "
                "PostgreSQL."
            ) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        # The file stays: removing it would let a third process lock a new file while a second
        # still holds the old one.
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
