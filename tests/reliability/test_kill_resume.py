"""Kill training anywhere, resume, and end where an uninterrupted run ends: same weights, same
logged losses, no duplicated or missing steps. Real processes and real signals (SIGKILL, SIGTERM)."""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import CHILD_ENV, CONFIGS, ROOT
from conftest import torchrun as torchrun_command

pytestmark = pytest.mark.slow

COMMON = [
    # the tiny configs' small CNN: its weights and Adam's state are a few MB to write at every per-step save
    "data.synthetic_n=60",
    "train.batch_size=4",
    "train.seq_per_img=2",
    "train.epochs=2",
    "train.log_every=1",
    "train.save_every_steps=1",
    "train.seed=3",
    "--no-progress",
]


def command(config: Path, out: Path, run: str, data: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "captionlab.cli",
        "train",
        str(config),
        f"train.output_dir={out}",
        f"train.run_name={run}",
        f"data.path={data}",
        *COMMON,
        *extra,
    ]


def env() -> dict[str, str]:
    """The worker's torch threads (one under pytest-xdist: the other worker has the second core); the
    reference and the interrupted run always use the same number, so their weights compare exactly."""
    return {**os.environ, **CHILD_ENV, "PYTHONPATH": str(ROOT / "code")}


def run_to_end(cmd: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def saves(run_dir: Path) -> int:
    path = run_dir / "steps.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.is_file() else 0


def interrupt(cmd: list[str], run_dir: Path, rng: random.Random, how: str) -> int:
    """Start ``cmd``, wait for a few more optimizer steps (or for a checkpoint write to begin), then
    signal it; returns the exit code."""
    before = saves(run_dir)
    wait_for = before + rng.randint(2, 5)  # past the first save: --resume needs a last.pt
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        if how == "during-write" and saves(run_dir) > before and any(run_dir.glob(".last.pt.*.tmp")):
            break  # a checkpoint is being written at this very moment
        if how != "during-write" and saves(run_dir) >= wait_for:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    if how != "sigterm":
        assert proc.returncode == -signal.SIGKILL, err[-2000:]  # killed mid-run, not finished
    else:
        assert proc.returncode == 143, err[-2000:]
        assert "stopped by SIGTERM" in err and "--resume" in err
    return proc.returncode


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return [{k: v for k, v in r.items() if "seconds" not in k} for r in csv.DictReader(f)]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def check_same_run(reference: Path, resumed: Path) -> None:
    ref, got = weights(reference / "last.pt"), weights(resumed / "last.pt")
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    assert rows(resumed / "log.csv") == rows(reference / "log.csv")
    steps = rows(resumed / "steps.csv")
    assert [int(r["step"]) for r in steps] == list(range(1, len(steps) + 1))  # none twice, none missing
    assert steps == rows(reference / "steps.csv")


def survives(config: Path, tmp_path: Path, extra: list[str], seed: int, hows: tuple[str, ...]) -> None:
    """A reference run to the end; the same run interrupted once per ``hows`` and resumed each time."""
    data = tmp_path / "data"
    run_to_end(command(config, tmp_path, "reference", data, *extra))
    rng = random.Random(seed)
    cmd = command(config, tmp_path, "killed", data, *extra)
    run_dir = tmp_path / "killed"
    for i, how in enumerate(hows):
        interrupt(cmd + (["--resume"] if i else []), run_dir, rng, how)
        assert torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)["format"] == 2  # never torn
    run_to_end(cmd + ["--resume"])
    assert not list(run_dir.glob(".*.tmp"))
    check_same_run(tmp_path / "reference", run_dir)


def test_cross_entropy_survives_kills_anywhere(tmp_path):
    survives(CONFIGS / "tiny" / "cnn_gru.yaml", tmp_path, [], 7, ("sigkill", "during-write", "sigterm"))


def test_self_critical_survives_kills(tmp_path):
    run_to_end(command(CONFIGS / "tiny" / "cnn_gru.yaml", tmp_path, "xe", tmp_path / "data", "train.epochs=1"))
    scst = [f"train.init_from={tmp_path / 'xe' / 'best.pt'}", "train.scst_samples=2"]
    survives(CONFIGS / "tiny" / "scst.yaml", tmp_path, scst, 11, ("sigkill", "sigterm"))


def test_pretraining_survives_kills(tmp_path):
    pretrain = ["model.name=dual_encoder", "train.loss=contrastive", "train.select_metric=mean_recall"]
    survives(CONFIGS / "tiny" / "pretrain.yaml", tmp_path, pretrain, 13, ("sigkill", "sigterm"))


def test_ctrl_c_with_data_loader_workers_stops_cleanly_and_resumes_exactly(tmp_path):
    """``data.num_workers=2``: Ctrl-C in a terminal sends SIGINT to the whole foreground process group,
    the loader's workers included. The run must still finish its step, save and exit 130 with the resume
    hint (not die of a worker that exited), and its resume end where an uninterrupted run ends."""
    data, extra = tmp_path / "data", ["data.num_workers=2", "train.epochs=1"]
    config = CONFIGS / "tiny" / "cnn_gru.yaml"
    run_to_end(command(config, tmp_path, "reference", data, *extra))
    cmd, run_dir = command(config, tmp_path, "interrupted", data, *extra), tmp_path / "interrupted"

    def terminal() -> None:  # a terminal's job: its own process group, SIGINT not ignored
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen(cmd, env=env(), stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=terminal)  # fmt: skip
    deadline = time.time() + 300
    while proc.poll() is None and saves(run_dir) < 4 and time.time() < deadline:
        time.sleep(0.005)
    assert len(descendants(proc.pid)) >= 2  # the two loader workers are running
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "stopped by SIGINT" in err and "--resume" in err and "Traceback" not in err
    assert 0 < torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)["extra"]["step_in_epoch"]
    run_to_end(cmd + ["--resume"])
    check_same_run(tmp_path / "reference", run_dir)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc (children first found, then theirs)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    out, frontier = [], [pid]
    while frontier:
        kids = [c for c, p in parents.items() if p in frontier]
        out.extend(kids)
        frontier = kids
    return out


def torchrun(config: Path, out: Path, run: str, data: Path, *extra: str) -> list[str]:
    cmd = command(config, out, run, data, "train.device=cpu", *extra)
    return torchrun_command("-m", *cmd[2:])


def test_two_process_gloo_training_survives_a_kill(tmp_path):
    data = tmp_path / "data"
    config = CONFIGS / "tiny" / "cnn_gru.yaml"
    run_to_end([sys.executable, "-m", "captionlab.cli", "synth", "--out", str(data), "--n", "60"])
    run_to_end(torchrun(config, tmp_path, "reference", data))
    cmd = torchrun(config, tmp_path, "killed", data)
    run_dir = tmp_path / "killed"
    rng = random.Random(5)
    for i in range(2):  # SIGKILL the agent and both workers at once, mid-epoch, as a preempted node
        before, wait_for = saves(run_dir), saves(run_dir) + rng.randint(2, 6)
        proc = subprocess.Popen(
            cmd + (["--resume"] if i else []),
            env=env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 300
        while proc.poll() is None and saves(run_dir) < wait_for and time.time() < deadline:
            time.sleep(0.005)
        for pid in [proc.pid, *descendants(proc.pid)]:  # torchrun starts its workers in their own sessions
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        assert proc.wait(timeout=60) == -signal.SIGKILL  # killed mid-run, not finished
        assert saves(run_dir) > before
    run_to_end(cmd + ["--resume"])
    check_same_run(tmp_path / "reference", run_dir)
