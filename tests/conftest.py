"""Shared fixtures: a small synthetic dataset and tiny trained models, built once per session."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from captionlab.config import RunConfig, load_config

ROOT = Path(__file__).resolve().parents[1]  # the repository: tests read its configs and notebooks
CONFIGS = ROOT / "code" / "configs"
os.chdir(ROOT)  # relative paths are the working directory's (paths.py); the shipped configs' are the root's
TINY = CONFIGS / "tiny" / "cnn_gru.yaml"
# Feature caches of runs that do not name train.cache_dir go here, not into the repository's output/cache
os.environ.setdefault("CAPTIONLAB_CACHE_DIR", tempfile.mkdtemp(prefix="captionlab-test-cache-"))
WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # set under pytest-xdist (`make test` runs `pytest -n 2`)
THREADS = 1 if WORKER else min(2, os.cpu_count() or 1)  # one torch thread a worker: no oversubscription ...
torch.set_num_threads(THREADS)
CHILD_ENV = {"OMP_NUM_THREADS": str(THREADS)}  # ... and as many in the processes a test starts (kernels, CLIs)


def shared_dir(tmp_path_factory, name: str, make) -> Path:
    """``make(folder)`` once per test session, however many xdist workers ask: the first one makes it
    under a file lock, the others wait for it and reuse the folder (every tiny model is trained once)."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    root = root.parent if WORKER else root  # the workers' base folders are siblings
    folder, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            folder.mkdir(parents=True, exist_ok=True)
            make(folder)
            done.touch()
    return folder


def trained_once(tmp_path_factory, name: str, config: Path, *overrides: str):
    """The tiny model of ``config`` trained once per session into a shared folder, as (config, TrainResult);
    a worker that did not train it reads the same result back from the run folder."""
    from captionlab.training.trainer import train

    def make(folder: Path) -> None:
        train(load_config(config, [f"train.output_dir={folder / 'runs'}", *overrides]), progress=False)

    folder = shared_dir(tmp_path_factory, name, make)
    cfg = load_config(config, [f"train.output_dir={folder / 'runs'}", *overrides])
    return cfg, result_of(folder / "runs" / cfg.train.run_name)


def result_of(run_dir: Path):
    """A finished run's TrainResult from its folder: best epoch and metrics, history, last weights."""
    from captionlab.captioner import read_model
    from captionlab.checkpoint import read_checkpoint
    from captionlab.runlog import read_log
    from captionlab.training.trainer import TrainResult

    best = read_checkpoint(run_dir / "best.pt")
    model, _, _ = read_model(run_dir / "last.pt")
    return TrainResult(run_dir, int(best["epoch"]), dict(best["metrics"]), read_log(run_dir / "log.csv"), model)


def torchrun(*args: str, nproc: int = 2) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node N ARGS``: N local processes."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *args]


# A 2-layer Transformer decoder of width 32 (vit_transformer, retrieval_transformer): model checks, no training
TINY_DECODER = {"hidden_dim": 32, "num_heads": 4, "ff_dim": 64, "num_layers": 2, "dropout": 0.0, "max_positions": 24}


def tiny_config(tmp: Path, *overrides: str) -> RunConfig:
    """The tiny config with its data and outputs moved under ``tmp``."""
    return load_config(TINY, [f"train.output_dir={tmp / 'runs'}", f"train.cache_dir={tmp / 'cache'}", *overrides])


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """The tiny synthetic set (``synth_root / "tiny"``), made once for every worker before any run reads it."""
    from captionlab.data import synthetic

    cfg = load_config(TINY).data

    def make(folder: Path) -> None:
        synthetic.ensure(folder / "tiny", cfg.synthetic_n, cfg.synthetic_seed, cfg.synthetic_size, cfg.synthetic_lang)

    return shared_dir(tmp_path_factory, "synth", make)


@pytest.fixture(scope="session")
def tiny_cfg_factory(synth_root):
    def make(tmp: Path, *overrides: str) -> RunConfig:
        return tiny_config(tmp, f"data.path={synth_root / 'tiny'}", *overrides)

    return make


@pytest.fixture(scope="session")
def trained(tmp_path_factory, synth_root):
    """The tiny CNN+GRU trained on the tiny synthetic set (about a minute on 2 CPU cores)."""
    return trained_once(tmp_path_factory, "trained", TINY, f"data.path={synth_root / 'tiny'}")


@pytest.fixture(scope="session")
def trained_blind(tmp_path_factory, synth_root):
    """The same decoder trained with the image features zeroed: it can only learn the language prior."""
    return trained_once(
        tmp_path_factory,
        "blind",
        TINY,
        f"data.path={synth_root / 'tiny'}",
        "model.blind=true",
        "train.run_name=tiny_blind",
    )


@pytest.fixture(scope="session")
def trained_attention(tmp_path_factory, synth_root):
    """The tiny Show-Attend-Tell (96 px, 3x3 grid) trained on the tiny synthetic set."""
    return trained_once(
        tmp_path_factory, "attention", CONFIGS / "tiny" / "attention.yaml", f"data.path={synth_root / 'tiny'}"
    )


@pytest.fixture(scope="session")
def trained_vit(tmp_path_factory, synth_root):
    """The tiny vit_transformer (ViT at 96 px: 6x6 patches, 2-layer decoder) on the tiny synthetic set."""
    return trained_once(
        tmp_path_factory, "vit", CONFIGS / "tiny" / "vit_transformer.yaml", f"data.path={synth_root / 'tiny'}"
    )


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
def tiny_hf(tmp_path_factory, synth_root):
    """Tiny random CLIPVisionModel and GPT2LMHeadModel (tokenizer trained on the tiny set's captions),
    written with save_pretrained: what `captionlab tiny-hf` writes."""
    from captionlab.models.tiny_hf import write_tiny_models

    return shared_dir(
        tmp_path_factory,
        "hf",
        lambda hf: write_tiny_models(clipcap_config("clipcap_mlp.yaml", hf, hf, synth_root / "tiny")),
    )


@pytest.fixture(scope="session")
def trained_clipcap(tmp_path_factory, synth_root, tiny_hf):
    """ClipCap's MLP recipe (GPT-2 fine-tuned) on tiny random CLIP/GPT-2."""
    hf = [f"model.clip={tiny_hf / 'clip'}", f"model.lm={tiny_hf / 'gpt2'}", f"data.path={synth_root / 'tiny'}"]
    return trained_once(tmp_path_factory, "clipcap", CONFIGS / "tiny" / "clipcap_mlp.yaml", *hf)


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory, synth_root):
    """The tiny contrastive pre-training (`captionlab pretrain code/configs/tiny/pretrain.yaml`)."""
    from captionlab.config import PRETRAIN

    return trained_once(
        tmp_path_factory, "pretrain", CONFIGS / "tiny" / "pretrain.yaml", *PRETRAIN, f"data.path={synth_root / 'tiny'}"
    )


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
    (root / "cache").mkdir()  # one feature cache for the tests that train on these photos (see share_cache)
    return root


def share_cache(flickr: Path, work: Path) -> None:
    """Runs under ``work/runs`` keep their feature cache in ``work/cache`` (output/cache beside the runs):
    pointed at the session's one folder for these photographs, so that a second test training the same
    frozen encoder on them reads their features instead of encoding them again, as a user's later run does."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "cache").symlink_to(flickr / "cache", target_is_directory=True)


# Under xdist both workers start with a test that needs `trained`: one trained it while the other waited
# on its lock (23 s idle at the suite's start). Each worker now first makes a different model that some
# selected test needs, so the two are trained side by side and neither waits.
FIRST = {"gw0": "trained", "gw1": "trained_attention"}


@pytest.fixture(scope="session", autouse=True)
def _first_models_side_by_side(request) -> None:
    name = FIRST.get(WORKER or "")
    if name and any(name in item.fixturenames for item in request.session.items):
        request.getfixturevalue(name)
