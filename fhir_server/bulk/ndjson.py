"""NDJSON output files of one resource type, each closed at a size limit and a new one begun."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO


@dataclass(slots=True)
class OutputFile:
    res_type: str
    name: str
    count: int
    size: int


class SplitWriter:
    """Writes one line per resource; never holds more than the OS write buffer in memory."""

    def __init__(self, directory: Path, res_type: str, max_bytes: int) -> None:
        self.directory = directory
        self.res_type = res_type
        self.max_bytes = max_bytes
        self.files: list[OutputFile] = []
        self._handle: BinaryIO | None = None
        self._current: OutputFile | None = None

    def write(self, line: bytes) -> None:
        current = self._current
        size = len(line) + 1
        if current is None or (current.size and current.size + size > self.max_bytes):
            current = self._rotate()
        assert self._handle is not None
        self._handle.write(line)
        self._handle.write(b"\n")
        current.size += size
        current.count += 1

    def write_many(self, lines: list[bytes]) -> None:
        """A batch of lines in one write when it fits the current file (the common case)."""
        current = self._current
        size = sum(map(len, lines)) + len(lines)
        if current is None or current.size + size > self.max_bytes:
            for line in lines:
                self.write(line)
            return
        assert self._handle is not None
        self._handle.write(b"\n".join(lines))
        self._handle.write(b"\n")
        current.size += size
        current.count += len(lines)

    def _rotate(self) -> OutputFile:
        if self._handle is not None:
            self._handle.close()
        name = f"{self.res_type}-{len(self.files) + 1}.ndjson"
        self._handle = open(self.directory / name, "wb", buffering=1 << 20)  # noqa: SIM115
        self._current = OutputFile(self.res_type, name, 0, 0)
        self.files.append(self._current)
        return self._current

    def close(self) -> list[OutputFile]:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        return self.files
