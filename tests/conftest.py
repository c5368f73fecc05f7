"""Shared fixtures: a small synthetic dataset and tiny trained models, built once per session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from captionlab.config import RunConfig, load_config
from captionlab.paths import CONFIGS

TINY = CONFIGS / "tiny" / "cnn_gru.yaml"
torch.set_num_threads(min(2, os.cpu_count() or 1))


def tiny_config(tmp: Path, *overrides: str) -> RunConfig:
    """The tiny config with its data and outputs moved under ``tmp``."""
    return load_config(TINY, [f"train.output_dir={tmp / 'runs'}", *overrides])


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("synth")


@pytest.fixture(scope="session")
def tiny_cfg_factory(synth_root):
    def make(tmp: Path, *overrides: str) -> RunConfig:
        return tiny_config(tmp, f"data.path={synth_root / 'tiny'}", *overrides)

    return make


@pytest.fixture(scope="session")
def trained(tmp_path_factory, tiny_cfg_factory):
    """The tiny CNN+GRU trained on the tiny synthetic set (about a minute on 2 CPU cores)."""
    from captionlab.training.trainer import train

    tmp = tmp_path_factory.mktemp("trained")
    cfg = tiny_cfg_factory(tmp)
    result = train(cfg, progress=False)
    return cfg, result


@pytest.fixture(scope="session")
def trained_blind(tmp_path_factory, tiny_cfg_factory):
    """The same decoder trained with the image features zeroed: it can only learn the language prior."""
    from captionlab.training.trainer import train

    tmp = tmp_path_factory.mktemp("blind")
    cfg = tiny_cfg_factory(tmp, "model.blind=true", "train.run_name=tiny_blind")
    return cfg, train(cfg, progress=False)


@pytest.fixture(scope="session")
def trained_attention(tmp_path_factory, synth_root):
    """The tiny Show-Attend-Tell (96 px, 3x3 grid) trained on the tiny synthetic set."""
    from captionlab.training.trainer import train

    tmp = tmp_path_factory.mktemp("attention")
    cfg = load_config(CONFIGS / "tiny" / "attention.yaml", [f"train.output_dir={tmp / 'runs'}",
                                                             f"data.path={synth_root / 'tiny'}"])
    return cfg, train(cfg, progress=False)
