"""A file layer for the spool that injects faults on demand (unit tests only)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from gateway.storage.spool_files import FileOps


class FaultyOps(FileOps):
    """Real system calls, with faults switched on by the test.

    ``short_writes``: the next write writes only this many bytes and the one after it
    fails with ENOSPC (a disk filling up mid-write); ``write_error``/``fsync_error``/
    ``truncate_error``/``pwrite_error``/``open_error``: errno to raise (0: none).
    """

    def __init__(self) -> None:
        self.short_writes: int | None = None
        self.write_error = 0
        self.fsync_error = 0
        self.truncate_error = 0
        self.pwrite_error = 0
        self.open_error = 0
        self.calls: list[str] = []

    def write(self, fd: int, data: bytes | memoryview) -> int:
        self.calls.append("write")
        if self.short_writes is not None:
            part, self.short_writes = self.short_writes, None
            self.write_error = errno.ENOSPC
            return os.write(fd, bytes(data[:part]))
        if self.write_error:
            raise OSError(self.write_error, os.strerror(self.write_error))
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        self.calls.append("fsync")
        if self.fsync_error:
            raise OSError(self.fsync_error, os.strerror(self.fsync_error))
        os.fsync(fd)

    def ftruncate(self, fd: int, length: int) -> None:
        self.calls.append("ftruncate")
        if self.truncate_error:
            raise OSError(self.truncate_error, os.strerror(self.truncate_error))
        os.ftruncate(fd, length)

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        if self.pwrite_error:
            raise OSError(self.pwrite_error, os.strerror(self.pwrite_error))
        return os.pwrite(fd, data, offset)

    def open(self, path: Path, flags: int, mode: int = 0o640) -> int:
        if self.open_error:
            raise OSError(self.open_error, os.strerror(self.open_error))
        return os.open(path, flags, mode)

    def heal(self) -> None:
        """Switch every fault off."""
        self.short_writes = None
        self.write_error = self.fsync_error = self.truncate_error = 0
        self.pwrite_error = self.open_error = 0
