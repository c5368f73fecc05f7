"""The trainer runs unchanged under torchrun: two CPU processes (gloo) finish and agree."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import TINY, torchrun

pytestmark = pytest.mark.slow


def two_ranks(config: Path, tmp_path: Path, overrides: list[str]) -> list[list[str]]:
    """ddp_worker.py under torchrun, 2 CPU processes; per rank: weight digest, dist available, world size."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    worker = str(Path(__file__).with_name("ddp_worker.py"))
    proc = subprocess.run(
        torchrun(worker, str(config), str(tmp_path), *overrides), env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [(tmp_path / f"rank{r}.txt").read_text().split() for r in (0, 1)]


def two_epochs(tmp_path: Path) -> list[str]:
    return [
        f"train.output_dir={tmp_path / 'runs'}",
        f"train.cache_dir={tmp_path / 'cache'}",
        f"data.path={tmp_path / 'data'}",
        "data.synthetic_n=40",
        "train.epochs=2",
        "train.batch_size=4",
        "train.device=cpu",
    ]


def test_two_process_gloo_training_finishes_and_ranks_agree(tmp_path):
    overrides = [*two_epochs(tmp_path), "train.run_name=ddp"]
    ranks = two_ranks(TINY, tmp_path, overrides)
    assert ranks[0][0] == ranks[1][0]  # DDP kept both replicas' parameters identical
    assert ranks[0][2] == ranks[1][2] == "2"  # and there were two of them
    ckpt = torch.load(tmp_path / "runs" / "ddp" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 2  # epochs completed
    # each rank trained on its own half: 2 epochs x ceil(train / (4 images x 2 ranks)) steps, not twice that
    from captionlab.config import load_config
    from captionlab.data import load_dataset

    n_train = len(load_dataset(load_config(TINY, overrides).data).split("train"))
    assert ckpt["extra"]["global_step"] == 2 * -(-n_train // 8)
    rows = (tmp_path / "runs" / "ddp" / "log.csv").read_text().strip().split("\n")
    assert len(rows) == 3  # header + one row per epoch, written by rank 0 only


def test_two_process_self_critical_training_keeps_ranks_identical(tmp_path):
    from captionlab.config import load_config
    from captionlab.training.trainer import train

    data = [f"data.path={tmp_path / 'data'}", "data.synthetic_n=40", "train.device=cpu"]
    xe = train(
        load_config(TINY, [f"train.output_dir={tmp_path / 'runs'}", *data, "train.epochs=1", "train.run_name=xe"]),
        progress=False,
    )
    overrides = [
        f"train.output_dir={tmp_path / 'runs'}",
        *data,
        "train.epochs=1",
        "train.batch_size=4",
        f"train.init_from={xe.run_dir / 'best.pt'}",
        "train.run_name=scst_ddp",
    ]
    digests = [r[0] for r in two_ranks(TINY.with_name("scst.yaml"), tmp_path, overrides)]
    assert digests[0] == digests[1]  # gradients averaged by hand: replicas stay identical
    header = (tmp_path / "runs" / "scst_ddp" / "log.csv").read_text().split("\n")[0]
    assert "reward" in header and "baseline" in header


def test_two_process_training_from_the_feature_cache_then_fine_tuning_the_last_stage(tmp_path):
    """Under torchrun: epoch 1 trains the decoder from cached features of a frozen pretrained ResNet (one
    cache, built once, read by both ranks), epoch 2 opens layer4; both ranks end identical, each trained
    on its half, and the encoder's weights moved only in the stage that was opened."""
    from torchvision.models import resnet18

    torch.manual_seed(0)
    torch.save(resnet18().state_dict(), weights := tmp_path / "resnet18.pth")  # stands in for ImageNet weights
    overrides = [
        *two_epochs(tmp_path),
        "train.run_name=ddp_stages",
        "model.encoder.name=resnet18",
        "model.encoder.pretrained=true",
        f"model.encoder.weights={weights}",
        "train.feature_cache=true",
        "train.fine_tune_from_epoch=2",
        "train.fine_tune_blocks=1",
    ]
    ranks = two_ranks(TINY, tmp_path, overrides)
    assert ranks[0][0] == ranks[1][0] and ranks[0][2] == ranks[1][2] == "2"
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2  # train (built by rank 0, read by both) and val
    from captionlab.config import load_config
    from captionlab.data import load_dataset

    n_train = len(load_dataset(load_config(TINY, overrides).data).split("train"))
    ckpt = torch.load(tmp_path / "runs" / "ddp_stages" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["extra"]["global_step"] == 2 * -(-n_train // 8)
    ref, got = torch.load(weights, weights_only=True), ckpt["model"]
    assert not torch.equal(got["encoder.body.7.0.conv1.weight"], ref["layer4.0.conv1.weight"])  # opened at epoch 2
    assert torch.equal(got["encoder.body.6.0.conv1.weight"], ref["layer3.0.conv1.weight"])  # still frozen
