"""Atomic file writes: a file is replaced whole or not at all.

Checkpoints, results and metrics files are written to a temporary file beside the target and renamed
over it. If the disk fills, the directory is read-only, or the process dies mid-write, the previous
good file is still there, and the error says which path failed and why.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import CaptionlabError, InputError, MissingError


class OutputWriteError(CaptionlabError, OSError):
    """Writing an output file failed; the message names the path, the reason, and that the old file is intact."""


def atomic_write(path: str | Path, write: Callable[[str], None], what: str = "file") -> Path:
    """``write(tmp_path)`` fills a temporary file that then replaces ``path``."""
    path = Path(path)
    kept = f"; the previous {path.name} is unchanged" if path.exists() else ""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        reason = e.strerror or str(e) or type(e).__name__
        raise OutputWriteError(e.errno, f"could not write {what} {path}: {reason}{kept}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: str | Path, text: str, what: str = "file") -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    return atomic_write(path, write, what)


def remove_stale_temporaries(folder: str | Path) -> int:
    """Temporary files a killed write left behind (``.NAME.*.tmp``); returns how many were removed."""
    n = 0
    for p in Path(folder).glob(".*.tmp"):
        if p.is_file():
            p.unlink()
            n += 1
    return n


def read_json(path: Path, what: str = "annotation file") -> Any:
    """Parse a JSON file; errors name ``what`` the file is (annotation file, results file) and where."""
    if not path.is_file():
        raise MissingError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{what} {path} is not valid JSON: line {e.lineno}, column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{what} {path} is not UTF-8 text (byte {e.start}: {e.reason})") from None


def write_json(obj: Any, path: str | Path) -> None:
    """Indented UTF-8 JSON, written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n", Path(path).suffix[1:] + " file")
