"""Shared fixtures: a small synthetic dataset and tiny trained models, built once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from captionlab.config import RunConfig, load_config
from captionlab.paths import CONFIGS

TINY = CONFIGS / "tiny" / "cnn_gru.yaml"
torch.set_num_threads(min(2, os.cpu_count() or 1))


def torchrun(*args: str, nproc: int = 2) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node N ARGS``: N local processes."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *args]


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
    cfg = load_config(
        CONFIGS / "tiny" / "attention.yaml", [f"train.output_dir={tmp / 'runs'}", f"data.path={synth_root / 'tiny'}"]
    )
    return cfg, train(cfg, progress=False)


@pytest.fixture(scope="session")
def trained_vit(tmp_path_factory, synth_root):
    """The tiny vit_transformer (ViT at 96 px: 6x6 patches, 2-layer decoder) on the tiny synthetic set."""
    from captionlab.training.trainer import train

    tmp = tmp_path_factory.mktemp("vit")
    cfg = load_config(
        CONFIGS / "tiny" / "vit_transformer.yaml",
        [f"train.output_dir={tmp / 'runs'}", f"data.path={synth_root / 'tiny'}"],
    )
    return cfg, train(cfg, progress=False)


def clipcap_config(name: str, tmp: Path, hf: Path, synth: Path, *overrides: str) -> RunConfig:
    return load_config(
        CONFIGS / "tiny" / name,
        [
            f"train.output_dir={tmp / 'runs'}",
            f"data.path={synth}",
            f"model.clip={hf / 'clip'}",
            f"model.lm={hf / 'gpt2'}",
            *overrides,
        ],
    )


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory, synth_root, trained):
    """Tiny random CLIPVisionModel and GPT2LMHeadModel (tokenizer trained on the tiny set's captions),
    written with save_pretrained: what `captionlab tiny-hf` writes. ``trained`` makes the data first."""
    from captionlab.models.hf import write_tiny_models

    hf = tmp_path_factory.mktemp("hf")
    write_tiny_models(clipcap_config("clipcap_mlp.yaml", hf, hf, synth_root / "tiny"))
    return hf


@pytest.fixture(scope="session")
def trained_clipcap(tmp_path_factory, synth_root, tiny_hf):
    """ClipCap's MLP recipe (GPT-2 fine-tuned) on tiny random CLIP/GPT-2."""
    from captionlab.training.trainer import train

    tmp = tmp_path_factory.mktemp("clipcap")
    cfg = clipcap_config("clipcap_mlp.yaml", tmp, tiny_hf, synth_root / "tiny")
    return cfg, train(cfg, progress=False)


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory, synth_root, trained):
    """The tiny contrastive pre-training (`captionlab pretrain code/configs/tiny/pretrain.yaml`)."""
    from captionlab.cli import PRETRAIN
    from captionlab.training.trainer import train

    tmp = tmp_path_factory.mktemp("pretrain")
    cfg = load_config(
        CONFIGS / "tiny" / "pretrain.yaml",
        [*PRETRAIN, f"train.output_dir={tmp / 'runs'}", f"data.path={synth_root / 'tiny'}"],
    )
    return cfg, train(cfg, progress=False)


SUBSET = CONFIGS.parents[2] / "shared" / "flickr8k_subset"  # beside the checkout; research use, never copied


@pytest.fixture(scope="session")
def flickr_small(tmp_path_factory) -> Path:
    """A few hundred real Flickr8k photographs of ../shared/flickr8k_subset: a Karpathy JSON of its first
    300 training photos and all 113 val ones, written here, with ``images`` linked to the subset's own
    folder (the photographs are read from there, never copied). Skips where the subset is absent."""
    import json

    if not (SUBSET / "dataset_flickr8k.json").is_file():
        pytest.skip(f"the Flickr8k subset is not at {SUBSET} (a user's clone does not have it; CI does)")
    data = json.loads((SUBSET / "dataset_flickr8k.json").read_text())
    train = [im for im in data["images"] if im["split"] == "train"][:300]
    val = [im for im in data["images"] if im["split"] == "val"]
    root = tmp_path_factory.mktemp("flickr_small")
    (root / "dataset_flickr8k.json").write_text(json.dumps({"dataset": "flickr8k", "images": train + val}))
    (root / "images").symlink_to(SUBSET / "images", target_is_directory=True)
    return root
