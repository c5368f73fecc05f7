"""Per-run logs: log.csv (one row per epoch: losses, training statistics, val metrics), steps.csv
(every ``train.log_every`` steps), both appended across resumes, and TensorBoard scalars."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any


class RunLog:
    def __init__(
        self, run_dir: Path, tensorboard: bool = True, enabled: bool = True, purge_step: int | None = None
    ) -> None:
        """``purge_step`` (a resume): TensorBoard drops what an interrupted run logged from that step on,
        as ``truncate_after`` does for the CSV files, so curves have no duplicated steps."""
        self.enabled = enabled
        self.csv_path = run_dir / "log.csv"
        self.steps_path = run_dir / "steps.csv"
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge_step)
            except ImportError:  # tensorboard is optional; the CSV has everything
                self.tb = None

    def scalars(self, values: dict[str, float], step: int, prefix: str = "") -> None:
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(prefix + k, v, step)

    def epoch_row(self, row: dict[str, Any]) -> None:
        """One CSV row per epoch; columns fixed by the first row ever written to this run."""
        if not self.enabled:
            return
        _append(self.csv_path, row)
        self.scalars(
            {k: v for k, v in row.items() if k != "epoch" and isinstance(v, (int, float))}, int(row["epoch"]), "epoch/"
        )

    def restore_row(self, row: dict[str, Any]) -> None:
        """Append the epoch row a checkpoint carries unless log.csv already has it: the run was killed
        after writing last.pt and before this row, which would otherwise be lost for good."""
        logged = read_log(self.csv_path) if self.csv_path.is_file() else []
        if self.enabled and not any(r.get("epoch") == row["epoch"] for r in logged):
            self.epoch_row(row)

    def step_row(self, values: dict[str, float], step: int) -> None:
        """Training statistics at one optimizer step (the reward curve of self-critical training)."""
        if self.enabled:
            _append(self.steps_path, {"step": step, **values})
            self.scalars(values, step, "step/")

    def truncate_after(self, epoch: int, step: int) -> None:
        """On resume, forget rows logged after the checkpoint being resumed (epoch and step counts)."""
        if self.enabled:
            _truncate(self.csv_path, epoch)
            _truncate(self.steps_path, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _append(path: Path, row: dict[str, Any]) -> None:
    """Columns are the first row's; a later row with new ones (a ``train.init_from`` run's epoch 0 has
    val metrics only, its epochs add the training statistics) widens the file first, earlier rows blank."""
    exists = path.is_file() and path.stat().st_size > 0
    header = _header(path) if exists else list(row)
    new = [k for k in row if k not in header]
    if new:
        _rewrite(path, header + new, lambda r: len(r) == len(header), len(new))
        header += new
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        if not exists:
            w.writeheader()
        w.writerow(row)


def _header(path: Path) -> list[str]:
    with path.open(newline="") as f:
        return next(csv.reader(f))


def _rewrite(path: Path, header: list[str], keep: Any, pad: int = 0) -> None:
    """``header``, then the rows ``keep`` accepts (each padded with ``pad`` blanks), written atomically."""
    with path.open(newline="") as f:
        rows = list(csv.reader(f))[1:]
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        csv.writer(f).writerows([header] + [r + [""] * pad for r in rows if keep(r)])
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _truncate(path: Path, last: int) -> None:
    """Keep the header and the complete rows whose first column (epoch or step) is at most ``last``;
    a row torn by a kill mid-write goes too. Rewritten atomically."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    header = _header(path)

    def kept(row: list[str]) -> bool:
        n = _number(row[0]) if len(row) == len(header) else None
        return n is not None and n <= last

    _rewrite(path, header, kept)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def read_log(path: str | Path) -> list[dict[str, float]]:
    with Path(path).open(newline="") as f:
        return [{k: float(v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(f)]
