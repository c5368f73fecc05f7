"""One training loop: single process or DDP (torchrun), CPU or CUDA (+AMP), with checkpoint/resume,
per-epoch validation, best/last checkpoints, CSV/TensorBoard logs and fixed seeds."""

from __future__ import annotations

import dataclasses
import math
import random
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from .. import progress as P
from ..captioner import Captioner, read_model
from ..checkpoint import read_checkpoint, save_checkpoint
from ..config import RunConfig, save_config
from ..data.adapters import load_dataset
from ..data.dataset import CaptionDataset, CaptionGroups, collate_groups
from ..data.tokenizers import build_tokenizer, metric_text
from ..data.vocab import Vocabulary
from ..errors import CaptionlabError, InputError
from ..evaluation import caption_records, scoring_inputs
from ..metrics import FAST_METRICS, score
from ..metrics.coco import simple_tokenize
from ..models import MODELS, build_model
from ..models.base import FeatureInput
from ..paths import resolve
from . import distributed as D
from .feature_cache import CachedGroups, build_or_open, cache_key
from .resume import SkipSampler, StopSignals, TrainingStopped, capture_rng, restore_rng
from .rundir import check_run_dir, create_run_dir, describe_run
from .runlog import RunLog, read_log
from .scst import build_loss


class NonFiniteLossError(CaptionlabError, RuntimeError):
    """train.max_bad_steps non-finite losses in a row; the message names the last good checkpoint."""


@dataclass
class TrainResult:
    run_dir: Path
    best_epoch: int  # 1-based, as printed and logged; 0 when no epoch ran
    best_metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    model: torch.nn.Module | None = None  # the trained model as it is after the last epoch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_factor(cfg: RunConfig, epoch: int, step: int) -> float:
    """Learning-rate multiplier from (epoch, global step) alone, so resuming needs no scheduler state."""
    t = cfg.train
    if t.lr_schedule == "constant":
        f = 1.0
    elif t.lr_schedule == "step":
        f = t.lr_gamma ** (epoch // max(1, t.lr_step_epochs))
    elif t.lr_schedule == "cosine":
        f = 0.5 * (1 + math.cos(math.pi * epoch / max(1, t.epochs)))
    else:
        raise InputError(f"train.lr_schedule must be constant, step or cosine; got {t.lr_schedule!r}")
    return f * min(1.0, (step + 1) / t.warmup_steps) if t.warmup_steps > 0 else f


def build_vocab(cfg: RunConfig, dataset: CaptionDataset) -> Any:
    """Words of the training captions; or the model's own (``text_vocab``): a language model's
    tokenizer (ClipCap), or the vocabulary its pre-trained text tower was trained with (clip_gpt)."""
    own = getattr(MODELS.get(cfg.model.name), "text_vocab", None)
    vocab = own(cfg.model, cfg.data.tokenizer) if own is not None else None
    if vocab is not None:
        return vocab
    tok = build_tokenizer(cfg.data.tokenizer)
    return Vocabulary.build((tok.tokenize(c) for r in dataset.split("train") for c in r.captions), cfg.data.min_freq)


def validate(captioner: Captioner, dataset: CaptionDataset, cfg: RunConfig, progress: bool) -> dict[str, float]:
    """Fast in-process metrics on val (no Java), used to pick best.pt."""
    t = cfg.train
    caps = caption_records(
        captioner,
        dataset.split("val"),
        t.val_beam_size,
        t.val_max_len,
        t.val_batch_size,
        cfg.data.num_workers,
        progress,
        desc="validating",
    )
    caps, refs, how = scoring_inputs(captioner.tokenizer, caps, dataset.references("val"), "ptb-python")
    return score(caps, refs, FAST_METRICS, tokenizer=how, fast_cider=True)


SHOWN = ("Bleu_4", "ROUGE_L", "CIDEr", "i2t_R@1", "t2i_R@1", "mean_recall")  # the per-epoch console line


def _init_from(cfg: RunConfig, path: Path) -> tuple[RunConfig, Vocabulary, torch.nn.Module]:
    """The run takes the checkpoint's model config, vocabulary and weights; the encoder stays as
    trainable as it was (read_model builds it without pretrained weights, which would make it trainable)."""
    model, vocab, ckpt_cfg = read_model(path)
    if hasattr(model, "encoder") and hasattr(model.encoder, "set_trainable"):
        model.encoder.set_trainable(ckpt_cfg.model.encoder_trainable())
    return dataclasses.replace(cfg, model=ckpt_cfg.model), vocab, model


class _FeatureSource:
    """Training from the frozen-encoder feature cache (feature_cache.py), built on first use."""

    def __init__(
        self,
        cfg: RunConfig,
        model: torch.nn.Module,
        train_set: CaptionGroups,
        run_dir: Path,
        device: torch.device,
        info: D.DistInfo,
        progress: bool,
        manual_sync: bool,
    ) -> None:
        self.cfg, self.captioner, self.train_set, self.device, self.info = cfg, model, train_set, device, info
        self.dir = run_dir.parent.parent / "cache"  # output/model_ckpt/<run> -> output/cache
        self.progress, self.manual_sync = progress, manual_sync
        self._set: CachedGroups | None = None
        self._model: torch.nn.Module | None = None

    def usable(self, encoder: Any) -> bool:
        return self.cfg.train.feature_cache and encoder is not None and not encoder.trainable

    def dataset(self) -> CachedGroups:
        if self._set is None:
            key = cache_key(self.captioner, self.cfg.model, self.train_set.records, self.train_set.transform)
            path = self.dir / f"{key}.npy"
            args = (
                self.captioner,
                self.train_set.records,
                self.train_set.transform,
                path,
                self.device,
                self.cfg.train.val_batch_size,
                self.cfg.data.num_workers,
                self.progress,
            )
            if self.info.is_main:  # rank 0 builds; the others open what it wrote
                with torch.random.fork_rng(devices=[]):  # its DataLoader draws a seed: a run that builds
                    build_or_open(*args)  # the cache must train exactly as one that finds it built
            D.barrier(self.info)
            self._set = CachedGroups(self.train_set, build_or_open(*args))
        return self._set

    def model(self) -> torch.nn.Module:
        if self._model is None:
            fed = FeatureInput(self.captioner)
            self._model = (
                fed
                if not self.info.enabled or self.manual_sync
                else DDP(fed, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            )
        return self._model


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
        return _train(cfg, info, device, resume, overwrite, progress, loss_fn or build_loss(cfg.train), dataset)
    finally:
        D.teardown(info)


def _train(
    cfg: RunConfig,
    info: D.DistInfo,
    device: torch.device,
    resume: bool | str | Path,
    overwrite: bool,
    progress: bool,
    loss_fn: Any,
    dataset: CaptionDataset | None,
) -> TrainResult:
    t = cfg.train
    seed_everything(t.seed)
    progress = progress and info.is_main
    run_dir = resolve(t.output_dir) / t.run_name
    check_run_dir(run_dir, resume, overwrite)

    if dataset is None:
        dataset = load_dataset(cfg.data) if info.is_main else None  # rank 0 first: it may generate data
        D.barrier(info)
        dataset = dataset or load_dataset(cfg.data)
    if t.init_from:  # e.g. SCST from a cross-entropy checkpoint: its architecture, vocabulary and weights
        cfg, vocab, model = _init_from(cfg, resolve(t.init_from))  # a resume then loads last.pt over them
        model = model.to(device)
    else:
        vocab = build_vocab(cfg, dataset)
        model = build_model(cfg.model, len(vocab), vocab=vocab).to(device)
    encoder = getattr(model, "encoder", None)
    if t.fine_tune_from_epoch is not None:  # the config checked that the encoder starts frozen
        enc_params = [p for s in encoder.stages(t.fine_tune_blocks) for p in s.parameters()]  # opened later
    else:
        enc_params = [p for p in encoder.parameters() if p.requires_grad] if encoder is not None else []
    enc_ids = {id(p) for p in enc_params}
    groups = [
        {
            "params": [p for p in model.parameters() if p.requires_grad and id(p) not in enc_ids],
            "lr": t.lr,
            "base_lr": t.lr,
        }
    ]
    if enc_params:
        groups.append({"params": enc_params, "lr": t.encoder_lr, "base_lr": t.encoder_lr})
    optimizer = torch.optim.Adam(groups, weight_decay=t.weight_decay)

    done, global_step = 0, 0  # epochs completed, optimizer steps taken
    best = {"epoch": 0, "value": -math.inf, "metrics": {}}
    extra: dict[str, Any] = {}
    if resume:
        path = run_dir / "last.pt" if resume is True else Path(resume)
        ckpt = read_checkpoint(path, map_location=device)
        if ckpt["vocab"] != vocab.to_list():
            raise InputError(
                f"{path}: its vocabulary differs from the one built from {cfg.data.path}; "
                "resume with the same data settings"
            )
        model.load_state_dict(ckpt["model"])
        if "optimizer" in ckpt:
            optimizer.load_state_dict(ckpt["optimizer"])
        done = ckpt["epoch"]
        extra = ckpt.get("extra", {})
        global_step = int(extra.get("global_step", 0))
        best = extra.get("best", best)
    into_epoch = int(extra.get("step_in_epoch", 0))  # batches of epoch done + 1 already trained (mid-epoch last.pt)

    captioner = Captioner(model, vocab, cfg, device)
    train_set = CaptionGroups(
        dataset.split("train"),
        vocab,
        captioner.tokenizer,
        captioner.transform,
        cfg.data.max_caption_len,
        t.seq_per_img,
        t.seed,
    )
    if hasattr(loss_fn, "prepare"):  # e.g. SCST: rewards need every training image's references
        loss_fn.prepare(train_set.records, captioner.words, metric_text(captioner.tokenizer) or simple_tokenize)
    steps_per_epoch = math.ceil(len(train_set) / (t.batch_size * info.world_size))
    if info.is_main:  # the run can start: only now does its folder appear
        create_run_dir(run_dir, bool(resume), overwrite)
        print(describe_run(cfg, run_dir, dataset, vocab, model, device, steps_per_epoch, info.world_size), flush=True)
        if resume:
            print(f"resuming after epoch {done} of {t.epochs} ({path})", flush=True)
    D.barrier(info)
    log = RunLog(run_dir, t.tensorboard, enabled=info.is_main, purge_step=global_step + 1 if resume else None)
    if info.is_main:
        save_config(cfg, run_dir / "config.yaml")
        log.truncate_after(done, global_step)
        if "epoch_row" in extra:  # a kill between last.pt and its log.csv row: the row is rebuilt from last.pt
            log.restore_row(extra["epoch_row"])

    model_assets = model.assets() if hasattr(model, "assets") else None

    def wrap() -> torch.nn.Module:  # DDP syncs the parameters that require grad when it is built
        return DDP(model, device_ids=[device.index] if device.type == "cuda" else None) if info.enabled else model

    net = wrap()
    # a loss that decodes (SCST) calls init_state/step rather than forward, so DDP's hooks cannot sync:
    # it drives the bare model and the gradients are averaged by hand
    manual_sync = info.enabled and getattr(loss_fn, "needs_raw_model", False)
    target = model if manual_sync else net
    use_amp = t.amp and device.type == "cuda"
    if t.amp and not use_amp and info.is_main:
        warnings.warn("train.amp applies on CUDA only; training in float32 on the CPU", stacklevel=2)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    cache = _FeatureSource(cfg, model, train_set, run_dir, device, info, progress, manual_sync)
    if t.feature_cache and (encoder is None or encoder.trainable) and info.is_main:
        warnings.warn(
            "train.feature_cache applies while the encoder is frozen; this one trains, so images are "
            "encoded on the fly",
            stacklevel=2,
        )

    bad_in_a_row = int(extra.get("bad_in_a_row", 0))

    def save_last(epoch: int, step_in_epoch: int, sums: dict[str, float], count: int) -> None:
        """Mid-epoch last.pt: ``epoch`` epochs complete, ``step_in_epoch`` batches of the next one done."""
        ranks = D.all_gather_object({"rng": capture_rng(), "sums": sums, "count": count}, info)
        if info.is_main:
            save_checkpoint(
                run_dir / "last.pt",
                model_state=model.state_dict(),
                config=cfg.to_dict(),
                vocab=vocab.to_list(),
                epoch=epoch,
                optimizer=optimizer.state_dict(),
                assets=model_assets,
                extra={
                    "global_step": global_step,
                    "best": best,
                    "step_in_epoch": step_in_epoch,
                    "ranks": ranks,
                    "scaler": scaler.state_dict(),
                    "bad_in_a_row": bad_in_a_row,
                },
            )

    try:
        with StopSignals() as stop:
            for epoch in range(done, t.epochs):  # 0-based index; printed, logged and saved as epoch + 1
                torch.manual_seed(t.seed + epoch)  # dropout and shuffling depend on (seed, epoch) only: exact resume
                if t.fine_tune_from_epoch is not None and epoch + 1 >= t.fine_tune_from_epoch and not encoder.trainable:
                    encoder.fine_tune_last(t.fine_tune_blocks)
                    net = wrap()  # a DDP built while the encoder was frozen would not sync its new parameters
                    target = model if manual_sync else net
                    if info.is_main:
                        print(
                            f"epoch {epoch + 1}: fine-tuning the encoder's last {t.fine_tune_blocks} stage(s) at "
                            f"lr {t.encoder_lr:g}",
                            flush=True,
                        )
                epoch_set, step_model = (
                    (cache.dataset(), cache.model()) if cache.usable(encoder) else (train_set, target)
                )
                if info.enabled:
                    sampler = DistributedSampler(train_set, info.world_size, info.rank, shuffle=True, seed=t.seed)
                    sampler.set_epoch(epoch)
                else:
                    sampler = RandomSampler(train_set, generator=torch.Generator().manual_seed(t.seed + epoch))
                train_set.set_epoch(epoch)
                skip = into_epoch if epoch == done else 0  # a mid-epoch last.pt: its batches are done
                loader = DataLoader(
                    epoch_set,
                    batch_size=t.batch_size,
                    sampler=SkipSampler(sampler, skip * t.batch_size),
                    collate_fn=collate_groups,
                    num_workers=cfg.data.num_workers,
                    pin_memory=device.type == "cuda",
                    drop_last=False,
                )
                model.train()
                t0, sums, count = time.time(), {}, 0
                batches = iter(loader)
                if skip:  # continue the epoch exactly: the generators and running sums of that moment
                    mine = extra["ranks"][info.rank]
                    restore_rng(mine["rng"])
                    sums, count = dict(mine["sums"]), int(mine["count"])
                    if "scaler" in extra:
                        scaler.load_state_dict(extra["scaler"])
                last = skip + len(loader)
                stopped_at = ""
                bar = P.progress(
                    batches, total=len(loader), desc=f"epoch {epoch + 1}/{t.epochs}", unit="batch", enabled=progress
                )
                for i, (images, captions, idx) in enumerate(bar, start=skip):
                    images = images.to(device, non_blocking=True)
                    captions = captions.to(device, non_blocking=True)
                    for g in optimizer.param_groups:
                        g["lr"] = g["base_lr"] * lr_factor(cfg, epoch, global_step)
                    with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                        loss, stats = loss_fn(step_model, images, captions, idx)
                    optimizer.zero_grad(set_to_none=True)
                    skipped = D.any_across(not math.isfinite(stats["loss"]), info, device)  # every rank skips together
                    if skipped:
                        bad_in_a_row += 1
                        if info.is_main:
                            P.write(
                                f"epoch {epoch + 1} step {global_step + 1}: non-finite loss ({stats['loss']}); step "
                                f"skipped ({bad_in_a_row} in a row, train.max_bad_steps={t.max_bad_steps})"
                            )
                        if bad_in_a_row >= t.max_bad_steps:
                            raise NonFiniteLossError(
                                f"stopped: {bad_in_a_row} non-finite losses in a row (epoch {epoch + 1}, step "
                                f"{global_step + 1}); the last good checkpoint is {run_dir / 'last.pt'}. "
                                "Lower train.lr, set train.grad_clip, or check the data"
                            )
                    else:
                        bad_in_a_row = 0
                        scaler.scale(loss).backward()
                        if manual_sync:
                            D.average_gradients(model, info)
                        if t.grad_clip > 0:
                            scaler.unscale_(optimizer)
                            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
                        scaler.step(optimizer)
                        scaler.update()
                        for k, v in stats.items():
                            sums[k] = sums.get(k, 0.0) + v
                        count += 1
                    global_step += 1
                    if progress:
                        bar.set_postfix(loss=f"{stats['loss']:.3f}")
                    if info.is_main and (global_step % t.log_every == 0 or i + 1 == last or skipped):
                        lr_now = optimizer.param_groups[0]["lr"]  # every skipped step is logged, with each epoch's end
                        log.step_row({**stats, "lr": lr_now, "skipped_nonfinite": float(skipped)}, global_step)
                    stopping = D.any_across(stop.received is not None, info, device)
                    if i + 1 < last and (stopping or (t.save_every_steps and global_step % t.save_every_steps == 0)):
                        save_last(epoch, i + 1, sums, count)
                    if stopping:  # at an epoch's last batch, the epoch is finished and saved first
                        stopped_at = (
                            f"stopped by {stop.name or 'a signal'} at epoch {epoch + 1}, batch {i + 1} of "
                            f"{last} (step {global_step}): saved {run_dir / 'last.pt'}; continue with --resume"
                        )
                        if i + 1 < last:
                            raise TrainingStopped(stopped_at, 130 if stop.received == signal.SIGINT else 143)
                means = {k: D.mean_across(v / max(1, count), info, device) for k, v in sorted(sums.items())}
                train_loss = means.pop("loss", 0.0)
                row: dict[str, Any] = {
                    "epoch": epoch + 1,
                    "step": global_step,
                    "train_loss": train_loss,
                    "lr": optimizer.param_groups[0]["lr"],
                    **means,
                    "train_seconds": round(time.time() - t0, 2),
                }  # "seconds" adds validation
                if info.is_main:
                    metrics = getattr(loss_fn, "validate", validate)(captioner, dataset, cfg, progress)
                    row.update(metrics)
                    row["seconds"] = round(time.time() - t0, 2)
                    improved = metrics[t.select_metric] > best["value"]
                    if improved:
                        best = {"epoch": epoch + 1, "value": metrics[t.select_metric], "metrics": metrics}
                    common = dict(
                        model_state=model.state_dict(),
                        config=cfg.to_dict(),
                        vocab=vocab.to_list(),
                        epoch=epoch + 1,
                        metrics=metrics,
                        assets=model_assets,
                    )
                    state = {"global_step": global_step, "best": best, "bad_in_a_row": bad_in_a_row}
                    if improved:
                        save_checkpoint(run_dir / "best.pt", **common, extra=state)
                    save_checkpoint(
                        run_dir / "last.pt",
                        **common,
                        optimizer=optimizer.state_dict(),
                        extra={**state, "scaler": scaler.state_dict(), "epoch_row": row},  # see restore_row
                    )
                    log.epoch_row(row)
                    summary = " ".join(f"{k}={v:.3f}" for k, v in metrics.items() if k in SHOWN)
                    extra_stats = "".join(f"  {k} {v:.3f}" for k, v in means.items())
                    P.write(
                        f"epoch {epoch + 1}/{t.epochs}  loss {train_loss:.3f}{extra_stats}  val {summary}"
                        f"{'  *best*' if improved else ''}  ({row['seconds']:.0f}s)"
                    )
                D.barrier(info)
                if stopped_at:
                    raise TrainingStopped(stopped_at, 130 if stop.received == signal.SIGINT else 143)
    except KeyboardInterrupt:
        if info.is_main:
            print(
                f"\ninterrupted at once (second Ctrl-C): {run_dir / 'last.pt'} holds the last save; "
                "continue with --resume"
            )
        raise
    finally:
        log.close()
    best = D.broadcast_object(best, info)
    history = read_log(run_dir / "log.csv") if info.is_main and (run_dir / "log.csv").exists() else []
    return TrainResult(run_dir, int(best["epoch"]), dict(best["metrics"]), history, model)
