"""Per-run logs: a CSV of losses and metrics (appended across resumes) and TensorBoard scalars."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any


class RunLog:
    def __init__(self, run_dir: Path, tensorboard: bool = True, enabled: bool = True) -> None:
        self.enabled = enabled
        self.csv_path = run_dir / "log.csv"
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"))
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
        exists = self.csv_path.is_file() and self.csv_path.stat().st_size > 0
        if exists:
            with self.csv_path.open(newline="") as f:
                header = next(csv.reader(f))
        else:
            header = list(row)
        with self.csv_path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
            if not exists:
                w.writeheader()
            w.writerow(row)
        self.scalars({k: v for k, v in row.items() if k != "epoch" and isinstance(v, (int, float))},
                     int(row["epoch"]), "epoch/")

    def truncate_after(self, epoch: int) -> None:
        """On resume, forget rows of epochs that were logged after the checkpoint being resumed."""
        if not (self.enabled and self.csv_path.is_file()):
            return
        with self.csv_path.open(newline="") as f:
            rows = list(csv.reader(f))
        if not rows:
            return
        keep = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= epoch]
        with self.csv_path.open("w", newline="") as f:
            csv.writer(f).writerows(keep)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_log(path: str | Path) -> list[dict[str, float]]:
    with Path(path).open(newline="") as f:
        return [{k: float(v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(f)]
