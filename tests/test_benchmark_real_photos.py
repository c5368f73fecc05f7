"""benchmarks/real_photos.py: an arm's finished run is read back, not trained again, while the same config
would train it; --finished trains nothing. Needs ../shared/flickr8k_subset
(skips, saying so, where it is absent)."""

from __future__ import annotations

import json
import sys

import pytest

import real_photos
from conftest import share_cache

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("flickr_small")]  # the other Flickr tests' feature cache


@pytest.fixture
def bench(flickr_small, tmp_path, capsys, monkeypatch):
    """The command, run in this process (a new one would import torch again, three times a test)."""

    def run(*args: str) -> str:
        argv = ["real_photos.py", "--data", str(flickr_small), "--out", str(tmp_path), "--carve", "60", "--seeds", "0"]
        monkeypatch.setattr(sys, "argv", [*argv, "--samples", "2", *args])
        capsys.readouterr()
        real_photos.main()
        return capsys.readouterr().out

    return run


def test_a_finished_arm_is_read_back_and_an_unfinished_one_is_left_out(flickr_small, tmp_path, bench):
    share_cache(flickr_small, tmp_path)
    first = bench("--arms", "cnn_gru", "--epochs", "1")
    record = json.loads((tmp_path / "eval_cnn_gru_seed0" / "bench.json").read_text())
    assert "cnn_gru seed 0: val CIDEr-D by epoch" in first and record["config"]["train"]["epochs"] == 1
    row = next(line for line in first.splitlines() if line.startswith("| cnn_gru |"))
    again = bench("--arms", "cnn_gru,show_tell", "--epochs", "1", "--finished")
    assert "cnn_gru_seed0: reusing" in again and "val CIDEr-D by epoch" not in again
    assert row in again and "| show_tell |" not in again  # the same row read back; nothing trained
    log = tmp_path / "runs" / "cnn_gru_seed0" / "log.csv"
    stamp = log.stat().st_mtime_ns
    changed = bench("--arms", "cnn_gru", "--epochs", "2", "--finished")
    assert "| cnn_gru |" not in changed and "val CIDEr-D by epoch" not in changed  # its config changed: left out
    assert log.stat().st_mtime_ns == stamp  # and not trained again
    assert json.loads((tmp_path / "eval_cnn_gru_seed0" / "bench.json").read_text()) == record
