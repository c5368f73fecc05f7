"""Start-up time of a dataset load: every image decoded (at reduced scale) before training, as loads did
up to issue 38's item 14, against the header check of the splits in use that loads do now.

Writes a Karpathy JSON of ``--images`` photograph-sized JPEGs (500x375, Flickr's size; smooth colour
fields with noise, about 40 KB each) split 80/10/10 into train/val/test, then times each way (one
warm-up call, then the best of ``--repeats``): the old check of every split (``check_image`` on each record), and
``load_dataset(cfg, ("train", "val"))`` (training) and ``load_dataset(cfg, ("test",))`` (``evaluate
--split test``). The files are written once into ``--folder`` and reused by later calls.
Usage: python benchmarks/dataset_startup.py [--images 20000] [--folder /tmp/startup_images]
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
from PIL import Image

from captionlab.config import DataConfig
from captionlab.data import load_dataset
from captionlab.data.adapters import ADAPTERS
from captionlab.data.images import check_image
from captionlab.progress import progress
from retrieval_speed import best_of  # one warm-up call (the file cache), then the best of n


def write_images(folder: Path, n: int) -> Path:
    """``n`` JPEGs and their Karpathy JSON (written once; kept for the next call)."""
    ann = folder / f"dataset_{n}.json"
    if ann.is_file():
        return ann
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:375, 0:500]
    entries = []
    for i in progress(range(n), desc="writing images", unit="img"):
        name = f"{i:06d}.jpg"
        path = folder / "images" / name
        if not path.is_file():
            c = rng.integers(0, 255, 6)
            field = np.stack([(c[k] + c[k + 3] * (x + y) / 875) % 256 for k in range(3)], -1)
            noise = rng.normal(0, 12, field.shape)
            Image.fromarray(np.clip(field + noise, 0, 255).astype(np.uint8)).save(path, quality=85)
        split = "train" if i % 10 < 8 else "val" if i % 10 == 8 else "test"
        entries.append({"filename": name, "split": split, "imgid": i, "sentences": [{"raw": "a photograph"}]})
    ann.write_text(json.dumps({"images": entries}))
    return ann


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--folder", default="/tmp/startup_images")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls of each way after one warm-up call")
    a = ap.parse_args()
    ann = write_images(Path(a.folder), a.images)
    cfg = DataConfig(format="karpathy", path=str(ann), image_root=str(Path(a.folder) / "images"))

    def old_way() -> None:  # what load_dataset did before: decode every record of every split
        for r in ADAPTERS.get("karpathy")(cfg).records:
            check_image(r.path)

    rows = [
        ("before: every split decoded (check_image)", a.images, best_of(old_way, a.repeats)),
        (
            "train: train + val headers",
            a.images * 9 // 10,
            best_of(lambda: load_dataset(cfg, ("train", "val")), a.repeats),
        ),
        (
            "evaluate --split test: test headers",
            a.images // 10,
            best_of(lambda: load_dataset(cfg, ("test",)), a.repeats),
        ),
        ("no check (reading the JSON only)", 0, best_of(lambda: load_dataset(cfg, ()), a.repeats)),
    ]
    machine = platform.processor() or platform.machine()
    print(f"{a.images} JPEGs of 500x375 on {machine}, warm file cache, best of {a.repeats}")
    print("| load | images checked | seconds |\n|---|---:|---:|")
    for name, n, seconds in rows:
        print(f"| {name} | {n} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
