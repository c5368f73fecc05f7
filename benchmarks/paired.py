"""Is one arm better than another on the same test photos, or is it noise? Reads the ``per_image.json``
that ``real_photos.py``'s scoring leaves in each ``eval_<arm>_seed<n>/`` folder, pairs the runs of the
two arms seed by seed, and prints per seed the mean difference of a metric and how many photos it raised
or lowered, then over all the seeds the mean per-photo difference with a 95 % interval from a paired
bootstrap over the photos (Koehn 2004: the photos are resampled, each keeping its difference averaged
over the seeds). An interval that holds 0 is no established difference, whichever way the mean leans.
Corpus CIDEr is the mean of the per-photo CIDEr, so the mean difference is the table's.

Usage: python benchmarks/paired.py --base output/real_photos/eval_sat_seed{0,1,2} \\
           --new output/real_photos/eval_sat_scst_seed{0,1,2} [--metric CIDEr]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def per_photo(run: Path, metric: str) -> dict[int, float]:
    path = run / "per_image.json"
    if not path.is_file():
        sys.exit(f"{run}: no per_image.json (real_photos.py writes it when it scores a run)")
    return {im["image_id"]: float(im["scores"][metric]) for im in json.loads(path.read_text())["images"]}


def differences(base: list[Path], new: list[Path], metric: str) -> np.ndarray:
    """(seeds, photos): new minus base, photo by photo, runs paired in the order given."""
    rows = []
    for b, n in zip(base, new, strict=True):
        old, ours = per_photo(b, metric), per_photo(n, metric)
        if old.keys() != ours.keys():
            sys.exit(f"{b} and {n} scored different photos")
        rows.append([ours[k] - old[k] for k in sorted(old)])
    return np.array(rows)


def interval(diff: np.ndarray, draws: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95 % paired-bootstrap interval of the mean difference, resampling photos."""
    by_photo = diff.mean(0)  # (photos,): each photo's difference averaged over the seeds
    rng = np.random.default_rng(seed)
    means = by_photo[rng.integers(0, by_photo.size, (draws, by_photo.size))].mean(1)  # (draws,)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", nargs="+", required=True, help="eval_<arm>_seed<n> folders of the arm compared with")
    ap.add_argument("--new", nargs="+", required=True, help="the other arm's folders, seed for seed")
    ap.add_argument("--metric", default="CIDEr")
    a = ap.parse_args()
    if len(a.base) != len(a.new):
        ap.error(f"{len(a.base)} --base runs and {len(a.new)} --new runs: pair them seed for seed")
    diff = differences([Path(p) for p in a.base], [Path(p) for p in a.new], a.metric)
    print(f"| pair | photos | mean {a.metric} difference | photos raised | photos lowered |\n|---|---|---|---|---|")
    for b, n, d in zip(a.base, a.new, diff):
        print(f"| {Path(n).name} - {Path(b).name} | {d.size} | {d.mean():+.3f} | {(d > 0).sum()} | {(d < 0).sum()} |")
    low, high = interval(diff)
    print(f"\nover {len(diff)} seed(s): {diff.mean():+.3f} a photo, 95 % interval [{low:+.3f}, {high:+.3f}]"
          f" (paired bootstrap over {diff.shape[1]} photos)")  # fmt: skip


if __name__ == "__main__":
    main()
