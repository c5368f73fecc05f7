"""The parts a run is set up from, each on its own: seeds, the learning-rate schedule, vocabulary,
model (fresh, or ``train.init_from``), optimiser groups, the frozen-encoder feature source and the
per-epoch validation that picks best.pt."""

from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from .. import progress as P
from ..captioner import Captioner, read_model
from ..checkpoint import read_checkpoint
from ..config import ConfigError, RunConfig
from ..config_rules import init_from_problems
from ..data.adapters import load_dataset
from ..data.dataset import CaptionDataset, CaptionGroups, ImageItems, collate_images
from ..data.datastore import pad_captions, pooled, pooled_cache
from ..data.tokenizers import build_tokenizer
from ..data.vocab import Vocabulary
from ..errors import InputError, MissingError
from ..evaluation import caption_records, scoring_inputs
from ..metrics import FAST_METRICS, score
from ..models import model_class
from ..models.base import FeatureInput
from ..paths import resolve
from . import distributed as D
from .factory import new_model, pretrain_start, start_vocab
from .feature_cache import CachedGroups, build_or_open, cache_folder, cache_key


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


def build_vocab(cfg: RunConfig, dataset: CaptionDataset, start: dict | None = None) -> Any:
    """Words of the training captions; or the model's own (``text_vocab``): a language model's
    tokenizer (ClipCap), or the vocabulary its pre-trained text tower was trained with (clip_gpt;
    ``start``: its pre-training checkpoint, if read already)."""
    own = model_class(cfg.model.name).text_vocab(cfg.model, cfg.data.tokenizer)
    vocab = own if own is not None else start_vocab(cfg.model, start)
    if vocab is not None:
        return vocab
    tok = build_tokenizer(cfg.data.tokenizer)
    return Vocabulary.build((tok.tokenize(c) for r in dataset.split("train") for c in r.captions), cfg.data.min_freq)


def validate(
    captioner: Captioner, dataset: CaptionDataset, cfg: RunConfig, progress: bool, features: Any = None
) -> dict[str, float]:
    """Fast in-process metrics on val (no Java), used to pick best.pt; ``features``: val's cached
    encoder features, in split order (see ``FeatureSource.val_features``)."""
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
        features=features,
        on_bad_image=dataset.on_bad_image,
    )
    refs = {k: v for k, v in dataset.references("val").items() if k in caps}  # less any image skipped
    caps, refs, how = scoring_inputs(captioner.tokenizer, caps, refs, "ptb-python")
    return score(caps, refs, FAST_METRICS, tokenizer=how, fast_cider=True)


TRAINING_SPLITS = ("train", "val")


def training_data(cfg: RunConfig, info: D.DistInfo) -> CaptionDataset:
    """The run's data, the images of train and val checked once, by rank 0 (which also makes the synthetic
    set if it is not there yet); the other ranks keep the records it kept, checking nothing."""
    dataset = load_dataset(cfg.data, TRAINING_SPLITS) if info.is_main else None
    D.barrier(info)
    kept = D.broadcast_object(None if dataset is None else [str(r.path) for r in dataset.records], info)
    if dataset is None:
        dataset, keep = load_dataset(cfg.data, splits=()), set(kept)
        dataset.records = [r for r in dataset.records if str(r.path) in keep]
    return dataset


def checked_init_config(cfg: RunConfig) -> RunConfig:
    """A ``train.init_from`` run's config as it will train (the checkpoint's model section), checked
    before any data is loaded: one line naming both values where the data or a model key disagrees."""
    path = resolve(cfg.train.init_from)
    if not path.is_file():
        raise MissingError(f"train.init_from: no checkpoint at {path}")
    start = RunConfig.from_dict(read_checkpoint(path)["config"])
    found = init_from_problems(cfg, start)
    if found:
        raise ConfigError(found[0])
    return dataclasses.replace(cfg, model=start.model)


def init_from(cfg: RunConfig, path: Path) -> tuple[RunConfig, Vocabulary, torch.nn.Module]:
    """The run takes the checkpoint's model config, vocabulary and weights; the encoder stays as
    trainable as it was (read_model builds it without pretrained weights, which would make it trainable)."""
    model, vocab, ckpt_cfg = read_model(path)
    if model.image_encoder is not None:
        model.image_encoder.set_trainable(ckpt_cfg.model.encoder_trainable())
    return dataclasses.replace(cfg, model=ckpt_cfg.model), vocab, model


def build_model_and_vocab(cfg: RunConfig, dataset: CaptionDataset) -> tuple[RunConfig, Any, torch.nn.Module]:
    """``train.init_from`` (e.g. SCST from a cross-entropy checkpoint): that checkpoint's architecture,
    vocabulary and weights (a resume then loads last.pt over them); else a new model and vocabulary."""
    if cfg.train.init_from:
        return init_from(cfg, resolve(cfg.train.init_from))
    start = pretrain_start(cfg.model)  # read once, for the vocabulary and the weights
    vocab = build_vocab(cfg, dataset, start)
    return cfg, vocab, new_model(cfg.model, vocab, start)


def freeze_for_scst(model: torch.nn.Module, t: Any) -> None:
    """``train.scst_update=output`` (``output_bias``): every weight but the output layer's (its bias's)
    stops needing gradients, so none is computed for them and the optimiser never sees them: the reward
    can re-weigh the words a caption is made of, not re-learn what each training photo shows, which on a
    few hundred photos it otherwise does (docs/results.md, "SCST on real photographs")."""
    if t.loss != "scst" or t.scst_update == "all":
        return
    layer = model.output_layer()
    if t.scst_update == "output_bias" and getattr(layer, "bias", None) is None:
        raise InputError(f"train.scst_update=output_bias: {type(model).__name__}'s output layer has no bias")
    if model.image_encoder is not None:
        model.image_encoder.set_trainable(False)  # and in eval mode: its BatchNorm statistics stay the start's
    keep = {id(p) for p in (layer.parameters() if t.scst_update == "output" else [layer.bias])}
    for p in model.parameters():
        if id(p) not in keep:
            p.requires_grad_(False)


def build_optimizer(model: torch.nn.Module, t: Any) -> torch.optim.Optimizer:
    """Adam with two groups: the model at ``train.lr`` and its encoder's trainable parameters at
    ``train.encoder_lr`` (under ``train.fine_tune_from_epoch``: the stages that open later);
    ``base_lr`` is what ``lr_factor`` scales each step."""
    encoder = model.image_encoder
    if t.fine_tune_from_epoch is not None:  # the config checked that the encoder starts frozen
        enc_params = [p for s in encoder.stages(t.fine_tune_blocks) for p in s.parameters()]  # opened later
    else:
        enc_params = [p for p in encoder.parameters() if p.requires_grad] if encoder is not None else []
    enc_ids = {id(p) for p in enc_params}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in enc_ids]
    groups = [{"params": rest, "lr": t.lr, "base_lr": t.lr}]
    if enc_params:
        groups.append({"params": enc_params, "lr": t.encoder_lr, "base_lr": t.encoder_lr})
    return torch.optim.Adam(groups, weight_decay=t.weight_decay)


class FeatureSource:
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
        self.dir = cache_folder(cfg.train.cache_dir)
        self.progress, self.manual_sync = progress, manual_sync
        self._set: CachedGroups | None = None
        self._val: Any = None
        self._model: torch.nn.Module | None = None

    def usable(self, encoder: Any) -> bool:
        return self.cfg.train.feature_cache and encoder is not None and not encoder.trainable

    def _path(self, records: list, transform: Any) -> Path:
        """The cache file of ``records`` through ``transform`` (its name hashes everything they depend on)."""
        return self.dir / f"{cache_key(self.captioner, self.cfg.model, records, transform)}.npy"

    def _open(self, path: Path, records: list, transform: Any) -> Any:
        """The cache at ``path`` (built first where missing), memory-mapped."""
        t = self.cfg.train
        # Its DataLoader draws a seed: a run that builds the cache must train as one that finds it built.
        with torch.random.fork_rng(devices=[]):
            return build_or_open(
                self.captioner,
                records,
                transform,
                path,
                self.device,
                t.val_batch_size,
                self.cfg.data.num_workers,
                self.progress,
            )

    def dataset(self) -> CachedGroups:
        if self._set is None:
            records, transform = self.train_set.records, self.train_set.transform
            path = self._path(records, transform)  # hashed once: every encoder weight, every image's stat
            if self.info.is_main:  # rank 0 builds; the others open what it wrote
                self._open(path, records, transform)
            D.barrier(self.info)
            self._set = CachedGroups(self.train_set, self._open(path, records, transform))
        return self._set

    def val_features(self, records: list, transform: Any) -> Any:
        """Cached features of the val images while the encoder is frozen, for validation (rank 0 only):
        re-encoding them every epoch took half of an epoch on real photographs. None: encode on the fly."""
        if not self.usable(self.captioner.image_encoder):
            return None
        if self._val is None:
            self._val = self._open(self._path(records, transform), records, transform)
        return self._val

    def model(self) -> torch.nn.Module:
        if self._model is None:
            fed = FeatureInput(self.captioner)
            self._model = (
                fed
                if not self.info.enabled or self.manual_sync
                else DDP(fed, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            )
        return self._model


@torch.no_grad()
def fill_datastore(
    model: torch.nn.Module, train_set: CaptionGroups, cache: FeatureSource, max_len: int, progress: bool
) -> None:
    """The training split becomes the datastore of a model that ``uses_datastore``: each image's pooled
    encoder feature (read from the feature cache when training uses it, else encoded once here) and
    its captions as training tokenises them (``max_len`` words and ``<end>``)."""
    if cache.usable(model.image_encoder):
        rows = [pooled_cache(cache.dataset().features)]  # (N, C) from (N, regions, C)
    else:
        was_training, device = model.training, next(model.parameters()).device
        model.eval()
        loader = DataLoader(
            ImageItems(train_set.records, train_set.transform), batch_size=64, collate_fn=collate_images
        )
        rows = [
            pooled(model.encode(x.to(device))).cpu() for x, _ in P.progress(loader, desc="datastore", enabled=progress)
        ]
        model.train(was_training)
    model.fill_datastore(torch.cat(rows), pad_captions(train_set.captions, max_len + 1))  # (N, D), (N, 5, L)
