"""Training throughput with a frozen encoder: images encoded on the fly vs the feature cache.

A frozen pretrained ResNet (random weights saved locally stand in for ImageNet's: the cost is the
same) under show_attend_tell, on the synthetic set; one epoch each way after the cache is built,
printing training images/s. Usage: python benchmarks/feature_cache_speed.py [--encoder resnet50]
[--image-size 224] [--images 400]
"""

from __future__ import annotations

import argparse
import csv
import platform
import tempfile
import time
from pathlib import Path

import torch
from torchvision import models as tvm

from captionlab.config import load_config
from captionlab.paths import CONFIGS
from captionlab.training.trainer import train


def images_per_second(run_dir: Path, n_train: int) -> float:
    row = next(csv.DictReader((run_dir / "log.csv").open()))
    return n_train / float(row["train_seconds"])  # the training steps alone, validation excluded


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default="resnet50")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--images", type=int, default=400)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    weights = tmp / f"{a.encoder}.pth"
    torch.save(getattr(tvm, a.encoder)().state_dict(), weights)
    common = [
        f"train.output_dir={tmp / 'runs'}",
        f"data.path={tmp / 'data'}",
        f"data.synthetic_n={a.images}",
        f"data.image_size={a.image_size}",
        f"model.encoder.name={a.encoder}",
        "model.encoder.pretrained=true",
        f"model.encoder.weights={weights}",
        "model.grid_size=7",
        "train.epochs=1",
        "train.tensorboard=false",
        "train.val_max_len=2",
    ]

    def run(name: str, *extra: str):
        return train(
            load_config(CONFIGS / "tiny" / "attention.yaml", [*common, f"train.run_name={name}", *extra]),
            progress=False,
        )

    t0 = time.time()
    n_train = int(a.images * 0.8)
    t1 = time.time()
    run("cached", "train.feature_cache=true")  # makes the data and builds the cache: every file read once already
    build = time.time() - t1
    fly = run("on_the_fly")  # both timed arms now start warm, in the same state
    again = run("cached2", "train.feature_cache=true")
    on, off = images_per_second(fly.run_dir, n_train), images_per_second(again.run_dir, n_train)
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, threads {torch.get_num_threads()}; "
        f"show_attend_tell, frozen {a.encoder} at {a.image_size} px, grid 7, {n_train} training images"
    )
    print("| training | images/s |\n|---|---|")
    print(f"| encoder on the fly | {on:.1f} |\n| feature cache | {off:.1f} |")
    print(
        f"speed-up {off / on:.1f}x; building the cache took {build:.0f} s (one epoch's worth of encoding); "
        f"whole benchmark {time.time() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
