"""One training loop: single process or DDP (torchrun), CPU or CUDA (+AMP), with checkpoint/resume,
per-epoch validation, best/last checkpoints, CSV/TensorBoard logs and fixed seeds.

``Trainer.fit`` is the loop, on one screen, in the manner of nanoGPT's train.py; what it calls is
named beside it: ``_restore`` (resume), ``_loader`` (an epoch's batches, continued mid-epoch),
``_step`` (one optimiser step, or a skipped one on a non-finite loss), ``_end_epoch`` (validation,
best.pt/last.pt, the log row, in ``epoch_end.py``) and ``_payload`` (the one checkpoint payload, there
too). The parts a run is set up from (vocabulary, model, optimiser, feature source, validation) are in
``setup.py``."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from .. import progress as P
from ..captioner import Captioner
from ..checkpoint import read_checkpoint
from ..config import RunConfig, save_config
from ..data.dataset import CaptionDataset, CaptionGroups, collate_groups
from ..data.tokenizers import scoring_text
from ..errors import CaptionlabError, InputError
from ..optim import optimizer_step
from ..paths import resolve
from ..runlog import RunLog, read_log
from . import distributed as D
from .ema import WeightAverage
from .epoch_end import EpochEnd
from .objectives import build_loss
from .resume import (
    SkipSampler,
    StopSignals,
    TrainingStopped,
    check_resumable,
    load_training_state,
    restore_rng,
)
from .rundir import check_run_dir, create_run_dir, describe_run
from .setup import (
    FeatureSource,
    build_model_and_vocab,
    build_optimizer,
    checked_init_config,
    fill_datastore,
    freeze_for_scst,
    lr_factor,
    seed_everything,
    training_data,
)


class NonFiniteLossError(CaptionlabError, RuntimeError):
    """train.max_bad_steps non-finite losses in a row; the message names the last good checkpoint."""


@dataclass
class TrainResult:
    run_dir: Path
    best_epoch: int  # 1-based, as printed and logged; 0: the train.init_from start (no epoch beat it)
    best_metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    model: torch.nn.Module | None = None  # the trained model as it is after the last epoch


def train(
    cfg: RunConfig,
    resume: bool | str | Path = False,
    overwrite: bool = False,
    progress: bool = True,
    loss_fn: Any = None,
    dataset: CaptionDataset | None = None,
) -> TrainResult:
    """Train ``cfg``; ``dataset`` skips loading ``cfg.data`` again when the caller already has it."""
    info, device = D.setup(cfg.train.device)
    try:
        return Trainer(cfg, info, device, resume, overwrite, progress, loss_fn or build_loss(cfg.train), dataset).fit()
    finally:
        D.teardown(info)


class Trainer(EpochEnd):
    """One run: ``__init__`` sets it up (data, model, optimiser, resume point, run folder, logs);
    ``fit`` trains it to ``train.epochs``. Epochs are counted 0-based inside, 1-based in every file
    (log.csv's epoch 0: the weights a ``train.init_from`` run starts from, validated before any step)."""

    def __init__(
        self,
        cfg: RunConfig,
        info: D.DistInfo,
        device: torch.device,
        resume: bool | str | Path,
        overwrite: bool,
        progress: bool,
        loss_fn: Any,
        dataset: CaptionDataset | None,
    ) -> None:
        seed_everything(cfg.train.seed)
        cfg = checked_init_config(cfg) if cfg.train.init_from else cfg  # before any data or folder
        self.info, self.device, self.loss_fn = info, device, loss_fn
        self.progress = progress and info.is_main
        self.run_dir = resolve(cfg.train.output_dir) / cfg.train.run_name
        check_run_dir(self.run_dir, resume, overwrite)
        if dataset is None:
            dataset = training_data(cfg, info)
        self.dataset = dataset
        if not dataset.splits().get("val"):  # every epoch ends validating on it: say so now, not after one
            raise InputError(
                f"{dataset.source}: no val split (splits: {sorted(dataset.splits())}); training validates on it "
                "after every epoch to choose best.pt: give the data a val split"
            )
        self.cfg, self.vocab, model = build_model_and_vocab(cfg, dataset)
        self.model = model.to(device)
        self.encoder = self.model.image_encoder
        freeze_for_scst(self.model, self.cfg.train)
        self.optimizer = build_optimizer(self.model, self.cfg.train)
        self.done, self.global_step, self.extra = 0, 0, {}  # epochs complete, optimiser steps, resume state
        self.best: dict[str, Any] = {"epoch": 0, "value": -math.inf, "metrics": {}}
        self.ema = WeightAverage(self.model, cfg.train.ema_decay) if cfg.train.ema_decay else None
        if resume:
            self._restore(self.run_dir / "last.pt" if resume is True else Path(resume))
        self.into_epoch = int(self.extra.get("step_in_epoch", 0))  # batches of epoch `done` already trained
        self.bad_in_a_row = int(self.extra.get("bad_in_a_row", 0))
        self.captioner = Captioner(self.model, self.vocab, self.cfg, device)
        self.train_set = CaptionGroups(
            dataset.split("train"),
            self.vocab,
            self.captioner.tokenizer,
            self.captioner.transform,
            self.cfg.data.max_caption_len,
            self.cfg.train.seq_per_img,
            self.cfg.train.seed,
            dataset.on_bad_image,
        )
        words = scoring_text(self.captioner.tokenizer)  # SCST: the reward counts the scorer's tokens
        loss_fn.prepare(self.train_set.records, self.captioner.words, words, self.captioner.bad_endings)
        self._open_run(resume, overwrite)
        self._set_up_devices()

    def fit(self) -> TrainResult:
        t, info = self.cfg.train, self.info
        try:
            with StopSignals() as stop:
                self._validate_start()  # train.init_from: the starting weights are epoch 0
                for epoch in range(self.done, t.epochs):  # 0-based index; printed, logged and saved as epoch + 1
                    loader, step_model, skip = self._loader(epoch)
                    t0, last, stopping = time.time(), skip + len(loader), False
                    batches = iter(loader)  # before a resume restores the generators: making it draws a seed
                    sums, count = self._running_sums(skip)  # a mid-epoch resume continues the epoch's sums
                    bar = P.progress(
                        batches,
                        total=len(loader),
                        desc=f"epoch {epoch + 1}/{t.epochs}",
                        unit="batch",
                        enabled=self.progress,
                    )
                    for i, (images, captions, idx) in enumerate(bar, start=skip):
                        stats, skipped = self._step(step_model, images, captions, idx, epoch)
                        if not skipped:
                            for k, v in stats.items():
                                sums[k] = sums.get(k, 0.0) + v
                            count += 1
                        if self.progress:
                            bar.set_postfix(loss=f"{stats['loss']:.3f}")
                        if info.is_main and (self.global_step % t.log_every == 0 or i + 1 == last or skipped):
                            lr = self.optimizer.param_groups[0]["lr"]  # every skipped step is logged
                            self.log.step_row(
                                {**stats, "lr": lr, "skipped_nonfinite": float(skipped)}, self.global_step
                            )
                        stopping = D.any_across(stop.received is not None, info, self.device)
                        due = t.save_every_steps and self.global_step % t.save_every_steps == 0
                        if i + 1 < last and (stopping or due):
                            self._save_last_mid_epoch(epoch, i + 1, sums, count)
                        if stopping and i + 1 < last:
                            raise self._stopped(stop, epoch, i + 1, last)
                    self._end_epoch(epoch, sums, count, t0)
                    D.barrier(info)
                    if stopping:  # at an epoch's last batch: the epoch was finished and saved first
                        raise self._stopped(stop, epoch, last, last)
        except KeyboardInterrupt:
            if info.is_main:
                P.write(
                    f"\ninterrupted at once (second Ctrl-C): {self.run_dir / 'last.pt'} holds the last save; "
                    "continue with --resume"
                )
            raise
        finally:
            self.log.close()
        best = D.broadcast_object(self.best, info)
        log_csv = self.run_dir / "log.csv"
        history = read_log(log_csv) if info.is_main and log_csv.exists() else []
        return TrainResult(self.run_dir, int(best["epoch"]), dict(best["metrics"]), history, self.model)

    # -- set-up ------------------------------------------------------------------------------------

    def _restore(self, path: Path) -> None:
        """Weights, optimiser, epoch/step counters, best so far and the mid-epoch state of ``path``."""
        ckpt = read_checkpoint(path, map_location=self.device)
        check_resumable(path, ckpt, self.cfg, self.vocab.to_list())
        load_training_state(ckpt, self.model, self.optimizer, self.cfg.train)
        self.done = ckpt["epoch"]
        self.extra = ckpt.get("extra", {})
        self.global_step = int(self.extra.get("global_step", 0))
        self.best = self.extra.get("best", self.best)
        if self.ema is not None and "ema" in self.extra:  # else (ema_decay newly set) it starts from here
            self.ema.load_state_dict(self.extra["ema"])
        self.resumed_from = path

    def _open_run(self, resume: bool | str | Path, overwrite: bool) -> None:
        """The run can start: only now does its folder appear, with config.yaml and the logs."""
        info, t = self.info, self.cfg.train
        self.steps_per_epoch = math.ceil(len(self.train_set) / (t.batch_size * info.world_size))
        if info.is_main:
            create_run_dir(self.run_dir, bool(resume), overwrite)
            P.write(
                describe_run(
                    self.cfg,
                    self.run_dir,
                    self.dataset,
                    self.vocab,
                    self.model,
                    self.device,
                    self.steps_per_epoch,
                    info.world_size,
                )
            )
            if resume:
                P.write(f"resuming after epoch {self.done} of {t.epochs} ({self.resumed_from})")
        D.barrier(info)
        purge = self.global_step + 1 if resume else None
        self.log = RunLog(self.run_dir, t.tensorboard, enabled=info.is_main, purge_step=purge)
        if info.is_main:
            save_config(self.cfg, self.run_dir / "config.yaml")
            self.log.truncate_after(self.done, self.global_step)
            if "epoch_row" in self.extra:  # a kill between last.pt and its log.csv row: rebuilt from last.pt
                self.log.restore_row(self.extra["epoch_row"])

    def _set_up_devices(self) -> None:
        """DDP, AMP and the feature cache. A loss that decodes (SCST) calls init_state/step rather than
        forward, so DDP's hooks cannot sync: it drives the bare model and gradients are averaged by hand."""
        t, info = self.cfg.train, self.info
        self.manual_sync = info.enabled and self.loss_fn.needs_raw_model
        self.cache = FeatureSource(
            self.cfg, self.model, self.train_set, self.run_dir, self.device, info, self.progress, self.manual_sync
        )
        if self.model.uses_datastore:  # before DDP is built: it registers the buffers as they are then
            fill_datastore(self.model, self.train_set, self.cache, self.cfg.data.max_caption_len, self.progress)
        self.assets = self.model.assets()
        self._wrap()
        self.use_amp = t.amp and self.device.type == "cuda"
        if t.amp and not self.use_amp and info.is_main:
            P.write("note     train.amp applies on CUDA only; training in float32 on the CPU")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        if t.feature_cache and (self.encoder is None or self.encoder.trainable) and info.is_main:
            P.write(
                "note     train.feature_cache applies while the encoder is frozen; this one trains, so images "
                "are encoded on the fly"
            )

    def _wrap(self) -> None:
        """DDP syncs the parameters that require grad when it is built: rebuilt when the encoder opens."""
        d = self.device
        net = DDP(self.model, device_ids=[d.index] if d.type == "cuda" else None) if self.info.enabled else self.model
        self.target = self.model if self.manual_sync else net

    # -- the loop's parts --------------------------------------------------------------------------

    def _loader(self, epoch: int) -> tuple[DataLoader, torch.nn.Module, int]:
        """Epoch ``epoch``'s batches (past those a mid-epoch last.pt already trained), the module that
        takes them (the model, its DDP wrapper, or the feature-fed decoder) and the batches skipped."""
        t, info = self.cfg.train, self.info
        torch.manual_seed(t.seed + epoch)  # dropout and shuffling depend on (seed, epoch) only: exact resume
        start = t.fine_tune_from_epoch
        if start is not None and epoch + 1 >= start and not self.encoder.trainable:
            self.encoder.fine_tune_last(t.fine_tune_blocks)
            self._wrap()  # a DDP built while the encoder was frozen would not sync its new parameters
            if info.is_main:
                P.write(
                    f"epoch {epoch + 1}: fine-tuning the encoder's last {t.fine_tune_blocks} stage(s) at "
                    f"lr {t.encoder_lr:g}"
                )
        cached = self.cache.usable(self.encoder)
        epoch_set, step_model = (self.cache.dataset(), self.cache.model()) if cached else (self.train_set, self.target)
        if info.enabled:
            sampler = DistributedSampler(self.train_set, info.world_size, info.rank, shuffle=True, seed=t.seed)
            sampler.set_epoch(epoch)
        else:
            sampler = RandomSampler(self.train_set, generator=torch.Generator().manual_seed(t.seed + epoch))
        self.train_set.set_epoch(epoch)
        skip = self.into_epoch if epoch == self.done else 0  # a mid-epoch last.pt: its batches are done
        loader = DataLoader(
            epoch_set,
            batch_size=t.batch_size,
            sampler=SkipSampler(sampler, skip * t.batch_size),
            collate_fn=collate_groups,
            num_workers=self.cfg.data.num_workers,
            pin_memory=self.device.type == "cuda",
            drop_last=False,
        )
        self.model.train()
        return loader, step_model, skip

    def _running_sums(self, skip: int) -> tuple[dict[str, float], int]:
        """Continuing an epoch exactly: the generators, running sums and loss scale of that moment."""
        if not skip:
            return {}, 0
        mine = self.extra["ranks"][self.info.rank]
        restore_rng(mine["rng"])
        if "scaler" in self.extra:
            self.scaler.load_state_dict(self.extra["scaler"])
        return dict(mine["sums"]), int(mine["count"])

    def _step(
        self, step_model: torch.nn.Module, images: torch.Tensor, captions: torch.Tensor, idx: torch.Tensor, epoch: int
    ) -> tuple[dict[str, float], bool]:
        """One optimiser step: AMP, gradient clipping, hand-averaged gradients where DDP cannot sync.
        A non-finite loss on any rank skips the step on every rank; ``train.max_bad_steps`` in a row stop."""
        t = self.cfg.train
        images = images.to(self.device, non_blocking=True)  # (B, 3, H, W) pixels, or (B, *feature) cached
        captions = captions.to(self.device, non_blocking=True)  # (B * seq_per_img, T) token ids
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * lr_factor(self.cfg, epoch, self.global_step)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
            loss, stats = self.loss_fn(step_model, images, captions, idx)  # loss: () tensor; stats: floats
        skipped = D.any_across(not math.isfinite(stats["loss"]), self.info, self.device)
        if skipped:
            self.optimizer.zero_grad(set_to_none=True)
            self._bad_step(epoch, stats["loss"])
        else:
            self.bad_in_a_row = 0
            sync = (lambda: D.average_gradients(self.model, self.info)) if self.manual_sync else None
            optimizer_step(loss, self.optimizer, self.model.parameters(), t.grad_clip, self.scaler, sync)
            if self.ema is not None:
                self.ema.update(self.model)
        self.global_step += 1
        return stats, skipped

    def _bad_step(self, epoch: int, loss: float) -> None:
        t, self.bad_in_a_row = self.cfg.train, self.bad_in_a_row + 1
        if self.info.is_main:
            P.write(
                f"epoch {epoch + 1} step {self.global_step + 1}: non-finite loss ({loss}); step skipped "
                f"({self.bad_in_a_row} in a row, train.max_bad_steps={t.max_bad_steps})"
            )
        if self.bad_in_a_row >= t.max_bad_steps:
            raise NonFiniteLossError(
                f"stopped: {self.bad_in_a_row} non-finite losses in a row (epoch {epoch + 1}, step "
                f"{self.global_step + 1}); the last good checkpoint is {self.run_dir / 'last.pt'}. "
                "Lower train.lr, set train.grad_clip, or check the data"
            )

    def _stopped(self, stop: StopSignals, epoch: int, batch: int, last: int) -> TrainingStopped:
        message = (
            f"stopped by {stop.name or 'a signal'} at epoch {epoch + 1}, batch {batch} of {last} "
            f"(step {self.global_step}): saved {self.run_dir / 'last.pt'}; continue with --resume"
        )
        return TrainingStopped(message, stop.exit_code)
