"""The rebuild's output: JSON lines, a header first, then one record per image, appended as it goes.

Each batch of records is written, flushed and fsynced before the next batch starts, so a run killed at
any point (SIGKILL included) loses at most the batch in flight. The only damage a kill can leave is a
last line without its newline; reading repairs that by cutting it off, and the next run redoes those
images. Any other unreadable line is reported, never guessed at.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import InputError


class RecordFileError(InputError):
    """A records file that is not what a rebuild writes."""


def read_records(path: Path, repair: bool = True) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(header, records) of a JSONL file; a torn last line is cut off (``repair``) or ignored."""
    if not path.is_file():
        return None, []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data) and repair:  # a line cut short by a kill: drop it, its images are redone
        with open(path, "r+b") as f:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
    header, records = None, []
    for n, line in enumerate(data[:end].decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise RecordFileError(
                f"{path}: line {n} is not JSON ({e.msg}); not a file captionlab rebuild wrote?"
            ) from None
        if not isinstance(obj, dict) or obj.get("type") not in ("header", "caption"):
            raise RecordFileError(f"{path}: line {n} is neither a header nor a caption record")
        if obj["type"] == "header":
            if n != 1:
                raise RecordFileError(f"{path}: line {n}: a second header")
            header = obj
        else:
            records.append(obj)
    if records and header is None:
        raise RecordFileError(f"{path}: caption records without a header line")
    return header, records


class RecordWriter:
    """Appends records to a JSONL file; writes the header when the file is new or empty."""

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())
        if self.file.tell() == 0:
            self.append([header])

    def append(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        self.file.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
