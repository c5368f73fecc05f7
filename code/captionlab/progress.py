"""Progress reporting that suits where the output goes.

On a terminal: a tqdm bar. Anywhere else (a file under ``nohup``, CI, a notebook's output): a few
plain lines (at 25 %, 50 %, 75 %, done) instead of thousands of carriage-return updates, so logs and
executed notebooks stay small and readable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def is_terminal(stream: Any = None) -> bool:
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class LineProgress:
    """tqdm's small interface (iteration, ``set_postfix``, ``update``, ``close``) printed as lines.
    Loops shorter than ``quiet_s`` seconds print nothing: their callers report the result."""

    quiet_s = 5.0

    def __init__(
        self,
        iterable: Iterable[T] | None,
        desc: str,
        total: int | None,
        unit: str,
        every: float = 0.25,
        stream: Any = None,
    ) -> None:
        self.iterable = iterable
        self.desc, self.unit, self.every = desc, unit, every
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.stream = stream
        self.n = 0
        self.postfix: dict[str, Any] = {}
        self.t0 = time.time()
        self._next = every
        self.printed = self.closed = False

    def __iter__(self) -> Iterator[T]:
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __len__(self) -> int:
        return self.total or 0

    def set_postfix(self, **kw: Any) -> None:
        self.postfix = kw

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.total and self.n / self.total >= self._next and self.n < self.total:
            if time.time() - self.t0 >= self.quiet_s:
                self._print()
            while self._next <= self.n / self.total:
                self._next += self.every

    def close(self) -> None:
        """The closing line, unless the whole loop was too short to need reporting."""
        if self.n and not self.closed and (self.printed or time.time() - self.t0 >= self.quiet_s):
            self._print()
        self.closed = True

    def _print(self) -> None:
        dt = max(time.time() - self.t0, 1e-9)
        pct = (
            f"{100 * self.n / self.total:3.0f}% ({self.n}/{self.total} {self.unit})"
            if self.total
            else f"{self.n} {self.unit}"
        )
        extra = "".join(f" {k}={v}" for k, v in self.postfix.items())
        if self.total and 0 < self.n < self.total:  # remaining at the rate so far
            left = (self.total - self.n) * dt / self.n
            extra += f" ETA {int(left // 60)}:{int(left % 60):02d}"
        self.printed = True
        print(f"{self.desc}: {pct} {self.n / dt:.1f} {self.unit}/s{extra}", file=self.stream or sys.stderr, flush=True)


def progress(
    iterable: Iterable[T] | None = None,
    desc: str = "",
    total: int | None = None,
    unit: str = "it",
    enabled: bool = True,
    leave: bool = False,
) -> Any:
    """A bar on a terminal, a few lines elsewhere, nothing when ``enabled`` is false."""
    if not enabled:
        return tqdm(iterable, total=total, disable=True)
    if is_terminal():
        return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, dynamic_ncols=True)
    return LineProgress(iterable, desc, total, unit)


def write(message: str) -> None:
    """Print a line without breaking a bar that is on screen; flushed, so that a pipe or log file
    shows it at once (the trainer's one channel for what it says)."""
    tqdm.write(message, file=sys.stdout)
    sys.stdout.flush()
