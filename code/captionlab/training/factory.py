"""The model a training run starts from: built from its config, and (``model.pretrained_from``) started
from a ``captionlab pretrain`` checkpoint's towers. Training-time only: ``captioner.py`` is what users
load a trained checkpoint with."""

from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import read_checkpoint
from ..config import ModelConfig
from ..data.vocab import Vocabulary
from ..errors import InputError
from ..models import build_model, model_class
from ..paths import resolve


def read_pretrain(path: str | Path) -> dict:
    """The ``captionlab pretrain`` checkpoint that ``model.pretrained_from`` names."""
    ckpt = read_checkpoint(resolve(path))
    if ckpt["config"]["model"]["name"] != "dual_encoder":
        raise InputError(
            f"model.pretrained_from: {path} is not a 'captionlab pretrain' checkpoint "
            f"(its model is {ckpt['config']['model']['name']})"
        )
    return ckpt


def pretrain_start(cfg: ModelConfig) -> dict | None:
    """The ``model.pretrained_from`` checkpoint, read once at set-up, or None (the config has refused
    the key for a model that cannot start from pre-trained towers)."""
    return read_pretrain(cfg.pretrained_from) if cfg.pretrained_from else None


def start_vocab(cfg: ModelConfig, start: dict | None = None) -> Vocabulary | None:
    """The vocabulary of the pre-trained text tower a new model starts from, or None: its own."""
    start = start or pretrain_start(cfg)
    return None if start is None else model_class(cfg.name).start_vocab(start, cfg)


def new_model(cfg: ModelConfig, vocab, start: dict | None = None) -> torch.nn.Module:
    """A model to train: built from its config, then (``model.pretrained_from``) started from the
    pre-trained towers (``start``: that checkpoint, if the caller read it already); the model itself
    never reads a file while it is built."""
    model = build_model(cfg, len(vocab), vocab=vocab)
    start = start or pretrain_start(cfg)
    if start is not None:
        model.load_pretrained(start, cfg)
    return model
