"""A run's folder: refusing to clobber one, creating it only once a run can start, and what a
user wants to see before the first epoch."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from ..config import RunConfig
from ..data.dataset import CaptionDataset
from ..errors import ExistsError, MissingError
from ..files import remove_stale_temporaries
from ..models import model_class
from ..paths import resolve

RUN_FILES = ("last.pt", "best.pt", "log.csv", "steps.csv", "tensorboard", "config.yaml", "curves.png")


def run_contents(run_dir: Path) -> list[Path]:
    """What a run leaves in its folder: its files and its evaluations (``eval_*``, results of its model)."""
    if not run_dir.is_dir():
        return []
    return [run_dir / n for n in RUN_FILES if (run_dir / n).exists()] + sorted(run_dir.glob("eval_*"))


def check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber an existing run (any of its files, not only last.pt), before anything is loaded or written."""
    held = run_contents(run_dir)
    if held and not resume and not overwrite:
        names = ", ".join(p.name for p in held[:4]) + (", ..." if len(held) > 4 else "")
        raise ExistsError(
            f"{run_dir} already holds a run ({names}); pass --resume to continue it, --overwrite "
            "to start again, or choose another train.run_name"
        )
    if resume is True and not (run_dir / "last.pt").exists():
        raise MissingError(f"nothing to resume: {run_dir / 'last.pt'} does not exist")


def create_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Called only once the run can start, so a failed start leaves no debris. ``overwrite`` removes the
    old run's files and evaluations (they describe a model that is about to be replaced), nothing else."""
    if overwrite and not resume:
        for p in run_contents(run_dir):
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(run_dir)  # a checkpoint write that a kill cut short


def encoder_name(cfg: RunConfig) -> str:
    m = cfg.model
    if not model_class(m.name).uses_lm_vocab:
        return m.encoder.name
    images = f"CLIP {m.clip}" if m.clip else f"the {m.encoder.name} image tower of {m.pretrained_from}"
    return f"{images} + LM {m.lm}"


def describe_run(
    cfg: RunConfig,
    run_dir: Path,
    dataset: CaptionDataset,
    vocab: Any,
    model: torch.nn.Module,
    device: torch.device,
    steps_per_epoch: int,
    world_size: int,
) -> str:
    """What a user wants to see before the first epoch: data, vocabulary, model size, device, where it goes."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    splits = ", ".join(f"{k} {v}" for k, v in dataset.splits().items())
    dev = f"{device}" + (
        f" x {world_size} processes"
        if world_size > 1
        else f" ({torch.get_num_threads()} threads)"
        if device.type == "cpu"
        else ""
    )
    t = cfg.train
    learning = f"{trainable / 1e6:.2f} M" if trainable >= 10_000 else f"{trainable:,}"  # SCST may train 672
    return "\n".join(
        [
            f"run      {run_dir}",
            f"data     {cfg.data.format} at {resolve(cfg.data.path)}: {splits} images",
            f"vocab    {len(vocab)} tokens (tokenizer {cfg.data.tokenizer}, min_freq {cfg.data.min_freq})",
            f"model    {cfg.model.name} with {encoder_name(cfg)}: {total / 1e6:.2f} M parameters, {learning} trainable",
            f"device   {dev}",
            f"schedule {t.epochs} epochs x {steps_per_epoch} steps of {t.batch_size} images x {t.seq_per_img} captions",
        ]
    )
