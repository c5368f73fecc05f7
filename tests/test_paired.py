"""benchmarks/paired.py, behind docs/results.md's SCST interval: a photo-by-photo difference of two
arms' runs, and a bootstrap interval that holds 0 for noise and excludes it for a steady gain."""

from __future__ import annotations

import json

import numpy as np
import pytest

from paired import differences, interval


def run(folder, scores: dict[int, float]):
    folder.mkdir(parents=True)
    images = [{"image_id": k, "caption": "a dog", "scores": {"CIDEr": v}} for k, v in scores.items()]
    (folder / "per_image.json").write_text(json.dumps({"split": "test", "images": images}))
    return folder


def test_differences_pair_photos_and_seeds_and_the_interval_tells_noise_from_a_gain(tmp_path):
    rng = np.random.default_rng(1)
    base = [run(tmp_path / f"base{s}", dict(enumerate(rng.uniform(0, 1, 150)))) for s in range(3)]
    old = [json.loads((b / "per_image.json").read_text())["images"] for b in base]
    gain = [
        run(tmp_path / f"gain{s}", {im["image_id"]: im["scores"]["CIDEr"] + 0.05 for im in old[s]}) for s in range(3)
    ]
    noise = [run(tmp_path / f"noise{s}", dict(enumerate(rng.uniform(0, 1, 150)))) for s in range(3)]
    d = differences(base, gain, "CIDEr")
    assert d.shape == (3, 150) and np.allclose(d, 0.05)
    low, high = interval(d)
    assert low == pytest.approx(0.05) and high == pytest.approx(0.05)
    low, high = interval(differences(base, noise, "CIDEr"))
    assert low < 0 < high
    shuffled = run(tmp_path / "other", {k + 1000: 0.5 for k in range(150)})
    with pytest.raises(SystemExit, match="different photos"):
        differences(base[:1], [shuffled], "CIDEr")
