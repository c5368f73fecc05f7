"""benchmarks/real_photo_arms.py: an SCST arm starts from the best.pt of the arm it names, of the same seed,
and --finished leaves it out while that start has not finished. Needs no photographs: the arm it starts
from is stood in for."""

from __future__ import annotations

import argparse

import pytest

import real_photo_arms as arms


def test_an_scst_arm_starts_from_the_best_pt_of_the_arm_it_names(monkeypatch, tmp_path):
    asked = []

    def start(name, seed, a, carve, extra):
        asked.append((name, seed, carve, extra))
        return {"CIDEr": 0.4}, tmp_path / f"{name}_seed{seed}" / "best.pt"

    monkeypatch.setattr(arms, "run_arm", start)
    for scst, base in (("sat_scst", "sat"), ("retrieval_scst", "retrieval_transformer")):
        over, info = arms.prerequisites(scst, 2, argparse.Namespace(), 150, ["x=1"])
        assert over == [f"train.init_from={tmp_path / f'{base}_seed2' / 'best.pt'}"] and info == {}
    assert asked == [("sat", 2, 150, ["x=1"]), ("retrieval_transformer", 2, 150, ["x=1"])]
    assert arms.ARMS["retrieval_scst"].config == arms.ARMS["sat_scst"].config == "flickr8k_scst.yaml"


def test_finished_leaves_out_an_scst_arm_whose_start_has_not_finished(monkeypatch):
    monkeypatch.setattr(arms, "run_arm", lambda *args: None)  # what run_arm returns under --finished
    with pytest.raises(arms.NotFinished, match="retrieval_transformer"):
        arms.prerequisites("retrieval_scst", 0, argparse.Namespace(), 150, [])
