"""What a run does between its epochs: validation, best.pt and last.pt, the log row and the console
line; and before its first epoch, for a ``train.init_from`` run, the score of the weights it starts
from. A part of ``Trainer`` (a mixin): the attributes below are the trainer's."""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from .. import progress as P
from ..captioner import Captioner
from ..checkpoint import save_checkpoint
from ..config import RunConfig
from ..data.dataset import CaptionDataset
from ..metric_keys import SHOWN
from ..runlog import RunLog
from . import distributed as D
from .ema import WeightAverage
from .resume import capture_rng
from .setup import FeatureSource, validate


class EpochEnd:
    cfg: RunConfig
    info: D.DistInfo
    device: torch.device
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: Any
    ema: WeightAverage | None
    captioner: Captioner
    dataset: CaptionDataset
    cache: FeatureSource
    loss_fn: Any
    log: RunLog
    run_dir: Path
    vocab: Any
    assets: Any
    best: dict[str, Any]
    global_step: int
    done: int  # epochs complete
    into_epoch: int  # batches of the next epoch a mid-epoch last.pt holds
    bad_in_a_row: int
    progress: bool

    def _end_epoch(self, epoch: int, sums: dict[str, float], count: int, t0: float) -> None:
        """Epoch means across ranks; on rank 0 validation, best.pt when it improved, last.pt (which
        carries the epoch's log row, see ``RunLog.restore_row``), then the log row and the console line."""
        info, t = self.info, self.cfg.train
        means = {k: D.mean_across(v / max(1, count), info, self.device) for k, v in sorted(sums.items())}
        train_loss = means.pop("loss", 0.0)
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": self.global_step,
            "train_loss": train_loss,
            "lr": self.optimizer.param_groups[0]["lr"],
            **means,
            "train_seconds": round(time.time() - t0, 2),
        }  # "seconds" adds validation
        if not info.is_main:
            return
        try:
            with self._averaged():  # the weight average (train.ema_decay) validates and is best.pt
                metrics = self._validate()
                improved = self._keep_if_best(epoch + 1, metrics)
        except Exception:  # a validation error never costs the epoch it follows (last.pt: the raw weights)
            scaler = self.scaler.state_dict()
            save_checkpoint(
                self.run_dir / "last.pt", **self._payload(epoch + 1, None, True, scaler=scaler, epoch_row=row)
            )
            P.write(f"epoch {epoch + 1} is trained and saved in {self.run_dir / 'last.pt'}; its validation failed:")
            raise
        row.update(metrics)
        row["seconds"] = round(time.time() - t0, 2)
        save_checkpoint(
            self.run_dir / "last.pt",
            **self._payload(epoch + 1, metrics, optimizer=True, scaler=self.scaler.state_dict(), epoch_row=row),
        )
        self.log.epoch_row(row)
        extra_stats = "".join(f"  {k} {v:.3f}" for k, v in means.items())
        P.write(
            f"epoch {epoch + 1}/{t.epochs}  loss {train_loss:.3f}{extra_stats}  val {_shown(metrics)}"
            f"{'  *best*' if improved else ''}  ({row['seconds']:.0f}s)"
        )

    def _validate_start(self) -> None:
        """A ``train.init_from`` run scores the weights it starts from (log.csv's epoch 0), and they are
        best.pt until an epoch beats them on val: a fine-tune that only lowers val CIDEr (SCST on a few
        hundred photos can) then hands back its start, not the least bad of its epochs."""
        if not self.cfg.train.init_from or self.done or self.into_epoch:  # not a fresh start: a resume
            return
        if self.info.is_main:
            t0 = time.time()
            with self._averaged():  # the average starts as the weights themselves
                metrics = self._validate()
            self._keep_if_best(0, metrics)  # nothing to beat yet: the start is best.pt
            self.log.epoch_row({"epoch": 0, "step": 0, **metrics, "seconds": round(time.time() - t0, 2)})
            P.write(f"epoch 0 (the train.init_from weights, before any step)  val {_shown(metrics)}  *best*")
        D.barrier(self.info)

    def _keep_if_best(self, epoch: int, metrics: dict[str, float]) -> bool:
        """best.pt (and ``self.best``) become these weights if they beat the best so far on val."""
        value = metrics[self.cfg.train.select_metric]
        if not value > self.best["value"]:  # as before: a NaN score never becomes best
            return False
        self.best = {"epoch": epoch, "value": value, "metrics": metrics}
        save_checkpoint(self.run_dir / "best.pt", **self._payload(epoch, metrics))
        return True

    def _averaged(self) -> Any:
        return self.ema.applied(self.model) if self.ema is not None else nullcontext()

    def _validate(self) -> dict[str, float]:
        metrics = self.loss_fn.validate(self.captioner, self.dataset, self.cfg, self.progress)
        if metrics is None:  # the objective has no metrics of its own: caption val and score it
            val = self.cache.val_features(self.dataset.split("val"), self.captioner.transform)
            metrics = validate(self.captioner, self.dataset, self.cfg, self.progress, val)
        return metrics

    def _save_last_mid_epoch(self, epoch: int, step_in_epoch: int, sums: dict[str, float], count: int) -> None:
        """last.pt inside an epoch: ``epoch`` epochs complete, ``step_in_epoch`` batches of the next done,
        with every rank's generators and running sums so that the rest of the epoch is the same."""
        ranks = D.all_gather_object({"rng": capture_rng(), "sums": sums, "count": count}, self.info)
        if self.info.is_main:
            payload = self._payload(
                epoch, None, optimizer=True, step_in_epoch=step_in_epoch, ranks=ranks, scaler=self.scaler.state_dict()
            )
            save_checkpoint(self.run_dir / "last.pt", **payload)

    def _payload(self, epoch: int, metrics: dict[str, float] | None, optimizer: bool = False, **extra: Any) -> dict:
        """The one checkpoint payload (best.pt, last.pt, mid-epoch last.pt): ``epoch`` epochs complete."""
        state = {"global_step": self.global_step, "best": self.best, "bad_in_a_row": self.bad_in_a_row}
        if optimizer and self.ema is not None:  # last.pt: the average goes on with a resume
            state["ema"] = self.ema.state_dict()
        return dict(
            model_state=self.model.state_dict(),
            config=self.cfg.to_dict(),
            vocab=self.vocab.to_list(),
            epoch=epoch,
            metrics=metrics,
            optimizer=self.optimizer.state_dict() if optimizer else None,
            assets=self.assets,
            extra={**state, **extra},
        )


def _shown(metrics: dict[str, float]) -> str:
    """The val metrics a console line shows: "Bleu_4=0.341 ROUGE_L=0.592 CIDEr=1.176"."""
    return " ".join(f"{k}={v:.3f}" for k, v in metrics.items() if k in SHOWN)
