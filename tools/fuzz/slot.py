"""The input being decoded and its deadline, shared by a worker with its supervisor."""

from __future__ import annotations

import mmap
import os
import struct
import time

from tools.fuzz.layout import MAX_INPUT


class SharedSlot:
    """The input being decoded and its deadline, in a file mapping the supervisor reads.

    Layout: u64 executions, f64 start (time.monotonic), f64 deadline, u32 length,
    u32 busy, then the input bytes.
    """

    HEAD = struct.Struct("<QddII")

    def __init__(self, path: str | os.PathLike, create: bool = False) -> None:
        size = self.HEAD.size + MAX_INPUT
        if create:
            with open(path, "wb") as f:
                f.truncate(size)
        self._file = open(path, "r+b")  # noqa: SIM115 - kept open for the mapping
        self.map = mmap.mmap(self._file.fileno(), size)

    def begin(self, count: int, data: bytes, deadline_s: float) -> None:
        now = time.monotonic()
        self.map[self.HEAD.size : self.HEAD.size + len(data)] = data
        self.HEAD.pack_into(self.map, 0, count, now, now + deadline_s, len(data), 1)

    def end(self, count: int) -> None:
        self.HEAD.pack_into(self.map, 0, count, 0.0, 0.0, 0, 0)

    def read(self) -> tuple[int, float, float, bytes | None]:
        count, start, deadline, length, busy = self.HEAD.unpack_from(self.map, 0)
        data = bytes(self.map[self.HEAD.size : self.HEAD.size + length]) if busy else None
        return count, start, deadline, data
