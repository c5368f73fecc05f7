"""Guards: non-finite losses are skipped, counted and stop a run that keeps producing them; a failed
write (disk full, read-only folder) keeps the previous good file and says which path and why."""

from __future__ import annotations

import errno
import json
import math
import os
import signal

import pytest
import torch

from captionlab.checkpoint import read_checkpoint, save_checkpoint
from captionlab.cli import main
from captionlab.data import load_dataset
from captionlab.files import OutputWriteError, write_json
from captionlab.runlog import read_log
from captionlab.training.losses import CrossEntropyLoss
from captionlab.training.resume import TrainingStopped
from captionlab.training.trainer import NonFiniteLossError, train


class PoisonedLoss(CrossEntropyLoss):
    """Cross-entropy that turns non-finite at the given calls (all of them with ``always``)."""

    def __init__(self, bad: set[int], always: bool = False) -> None:
        super().__init__()
        self.bad, self.always, self.calls = bad, always, 0

    def __call__(self, model, images, captions, idx=None):
        loss, stats = super().__call__(model, images, captions, idx)
        self.calls += 1
        if self.always or self.calls in self.bad:
            loss = loss * math.nan
            stats["loss"] = math.nan
        return loss, stats


def test_non_finite_steps_are_skipped_and_counted(tmp_path, tiny_cfg_factory, capsys):
    cfg = tiny_cfg_factory(
        tmp_path, "train.epochs=1", "data.synthetic_n=60", "train.batch_size=8", f"data.path={tmp_path / 'data'}"
    )
    result = train(cfg, progress=False, loss_fn=PoisonedLoss({2, 3}))
    out = capsys.readouterr().out
    assert out.count("non-finite loss") == 2 and "2 in a row" in out
    steps = read_log(result.run_dir / "steps.csv")
    assert sum(r.get("skipped_nonfinite", 0) for r in steps) == 2
    assert all(torch.isfinite(p).all() for p in result.model.parameters())  # no NaN reached the weights
    assert math.isfinite(result.history[-1]["train_loss"])  # the epoch mean leaves skipped steps out


def test_a_run_of_non_finite_losses_stops_and_keeps_the_last_good_checkpoint(tmp_path, tiny_cfg_factory):
    cfg = tiny_cfg_factory(
        tmp_path,
        "train.epochs=1",
        "data.synthetic_n=60",
        "train.batch_size=8",
        f"data.path={tmp_path / 'data'}",
        "train.max_bad_steps=3",
    )
    first = train(cfg, progress=False)
    good = read_checkpoint(first.run_dir / "last.pt")["model"]
    cfg.train.epochs = 2
    with pytest.raises(NonFiniteLossError, match=r"3 non-finite losses in a row .* last good checkpoint is .*last.pt"):
        train(cfg, resume=True, progress=False, loss_fn=PoisonedLoss(set(), always=True))
    kept = read_checkpoint(first.run_dir / "last.pt")
    assert kept["epoch"] == 1 and all(torch.equal(good[k], kept["model"][k]) for k in good)


def fail_midway(monkeypatch, target: str, err: int) -> None:
    """Patch ``target`` (a writer) to write half its output and then fail like a full disk."""

    def broken(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"half a file")
        raise OSError(err, "No space left on device" if err == errno.ENOSPC else "Read-only file system")

    monkeypatch.setattr(target, broken)


def test_disk_full_during_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, model_state={"w": torch.ones(2)}, config={}, vocab=["<pad>"], epoch=1)
    fail_midway(monkeypatch, "torch.save", errno.ENOSPC)
    with pytest.raises(
        OutputWriteError,
        match=r"could not write checkpoint .*last.pt: No space left on device; "
        r"the previous last.pt is unchanged",
    ):
        save_checkpoint(path, model_state={"w": torch.zeros(2)}, config={}, vocab=["<pad>"], epoch=2)
    assert torch.equal(read_checkpoint(path)["model"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left behind


def test_read_only_folder_for_results_is_named(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    write_json([{"image_id": 1, "caption": "old"}], path)

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("tempfile.mkstemp", read_only)
    with pytest.raises(OutputWriteError, match=r"could not write json file .*results.json: Read-only file system"):
        write_json([{"image_id": 1, "caption": "new"}], path)
    assert json.loads(path.read_text())[0]["caption"] == "old"


def test_the_cli_reports_a_failed_write_in_one_line(trained, tmp_path, monkeypatch, capsys):
    cfg, result = trained

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("captionlab.files.os.fsync", disk_full)  # text written, then the disk is full
    code = main(
        [
            "evaluate",
            str(result.run_dir / "best.pt"),
            "--metrics",
            "Bleu",
            "--tokenizer",
            "simple",
            "--out",
            str(tmp_path / "eval"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "No space left on device" in err[0] and "results.json" in err[0]


class Interrupting(CrossEntropyLoss):
    """Cross-entropy that sends this process SIGINT ``times`` times during call ``at``: Ctrl-C mid-step."""

    def __init__(self, at: int, times: int) -> None:
        super().__init__()
        self.at, self.times, self.calls = at, times, 0

    def __call__(self, model, images, captions, idx=None):
        self.calls += 1
        if self.calls == self.at:
            for _ in range(self.times):
                os.kill(os.getpid(), signal.SIGINT)
        return super().__call__(model, images, captions, idx)


def test_ctrl_c_finishes_the_step_and_saves_a_second_one_stops_at_once(tmp_path, tiny_cfg_factory):
    # Python's own Ctrl-C handler, as in a terminal (a shell starts background jobs with SIGINT ignored)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _ctrl_c(tmp_path, tiny_cfg_factory)
    finally:
        signal.signal(signal.SIGINT, previous)


def _ctrl_c(tmp_path, tiny_cfg_factory):
    cfg = tiny_cfg_factory(
        tmp_path, "train.epochs=1", "data.synthetic_n=60", "train.batch_size=4", f"data.path={tmp_path / 'data'}"
    )
    with pytest.raises(TrainingStopped, match=r"stopped by SIGINT at epoch 1, batch 3 of 12 .* --resume") as e:
        train(cfg, progress=False, loss_fn=Interrupting(at=3, times=1))
    assert e.value.code == 130
    last = read_checkpoint(tmp_path / "runs" / "tiny_cnn_gru" / "last.pt")
    assert last["epoch"] == 0 and last["extra"]["step_in_epoch"] == 3  # the step in progress was finished
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    with pytest.raises(KeyboardInterrupt):
        train(cfg, resume=True, progress=False, loss_fn=Interrupting(at=2, times=2))
    assert read_checkpoint(tmp_path / "runs" / "tiny_cnn_gru" / "last.pt")["extra"]["step_in_epoch"] == 3


def test_a_non_finite_self_critical_loss_is_skipped_like_cross_entropy(trained, tmp_path, capsys, monkeypatch):
    """The SCST path: a NaN reward for one batch makes its policy-gradient loss NaN; the step is skipped and
    counted as with cross-entropy, and the epoch finishes (it raised FloatingPointError before)."""
    from captionlab.config import load_config
    from captionlab.training.scst import Reward
    from conftest import CONFIGS

    cfg, result = trained
    calls = {"n": 0}
    real = Reward.__call__

    def poisoned(self, captions, record_ids):
        calls["n"] += 1
        out = real(self, captions, record_ids)
        return out * math.nan if calls["n"] == 3 else out  # the second batch's samples (1: samples, 2: greedy)

    monkeypatch.setattr(Reward, "__call__", poisoned)
    scst = load_config(
        CONFIGS / "tiny" / "scst.yaml",
        [
            f"train.output_dir={tmp_path}",
            f"data.path={tmp_path / 'data'}",
            "data.synthetic_n=40",
            "train.batch_size=8",
            f"train.init_from={result.run_dir / 'best.pt'}",
            "train.epochs=1",
        ],
    )
    out = train(scst, progress=False)
    assert capsys.readouterr().out.count("non-finite loss") == 1
    steps = read_log(out.run_dir / "steps.csv")
    assert sum(r.get("skipped_nonfinite", 0) for r in steps) == 1
    assert all(torch.isfinite(p).all() for p in out.model.parameters())
    assert out.history[-1]["epoch"] == 1 and math.isfinite(out.history[-1]["train_loss"])


def test_a_kill_between_last_pt_and_its_log_row_loses_no_row(tmp_path, tiny_cfg_factory, monkeypatch):
    """Fault injection in the window: epoch 1's last.pt is written, then the process dies before log.csv
    gets epoch 1's row. The resumed run rebuilds that row from last.pt (it was lost for good before)."""
    from captionlab.runlog import RunLog

    cfg = tiny_cfg_factory(
        tmp_path, "train.epochs=1", "data.synthetic_n=40", "train.batch_size=8", f"data.path={tmp_path / 'data'}"
    )
    real = RunLog.epoch_row

    def killed(self, row):
        raise SystemExit(137)  # what SIGKILL would leave: last.pt on disk, no row

    monkeypatch.setattr(RunLog, "epoch_row", killed)
    with pytest.raises(SystemExit):
        train(cfg, progress=False)
    assert read_checkpoint(cfg_dir := tmp_path / "runs" / cfg.train.run_name / "last.pt")["epoch"] == 1
    assert not (cfg_dir.parent / "log.csv").is_file() or len(read_log(cfg_dir.parent / "log.csv")) == 0
    monkeypatch.setattr(RunLog, "epoch_row", real)
    cfg.train.epochs = 2
    result = train(cfg, resume=True, progress=False)
    rows = read_log(result.run_dir / "log.csv")
    assert [r["epoch"] for r in rows] == [1, 2] and all("CIDEr" in r and "train_loss" in r for r in rows)


class CopiesLastCheckpoint(CrossEntropyLoss):
    """Cross-entropy that, at its ``at``-th call, copies the run's last.pt (what it was before that step)."""

    def __init__(self, run_dir, to, at: int) -> None:
        super().__init__()
        self.run_dir, self.to, self.at, self.calls = run_dir, to, at, 0

    def __call__(self, model, images, captions, idx=None):
        self.calls += 1
        if self.calls == self.at:
            import shutil

            shutil.copy(self.run_dir / "last.pt", self.to)
        return super().__call__(model, images, captions, idx)


def test_resume_from_a_named_checkpoint_repeats_the_straight_run_and_tensorboard_keeps_one_point_per_step(
    tmp_path, tiny_cfg_factory
):
    """`--resume PATH` from epoch 1's last.pt (kept aside) after the run went on to epoch 2: the final weights
    equal an uninterrupted run's, and TensorBoard's curves hold each step once (the later points of the
    first attempt are purged on resume)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    common = ["train.epochs=2", "data.synthetic_n=40", "train.batch_size=8", f"data.path={tmp_path / 'data'}"]
    common += ["train.tensorboard=true", "train.log_every=1"]
    straight = train(tiny_cfg_factory(tmp_path / "a", *common), progress=False)
    cfg = tiny_cfg_factory(tmp_path / "b", *common)
    run, kept = tmp_path / "b" / "runs" / cfg.train.run_name, tmp_path / "epoch1.pt"
    steps = -(-len(load_dataset(cfg.data).split("train")) // 8)  # per epoch
    train(cfg, progress=False, loss_fn=CopiesLastCheckpoint(run, kept, at=steps + 1))
    assert read_checkpoint(kept)["epoch"] == 1 and read_checkpoint(run / "last.pt")["epoch"] == 2
    resumed = train(cfg, resume=str(kept), progress=False)
    a, b = (read_checkpoint(r.run_dir / "last.pt")["model"] for r in (straight, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)
    curves = EventAccumulator(str(run / "tensorboard"))
    curves.Reload()
    logged = [e.step for e in curves.Scalars("step/loss")]
    assert logged == list(range(1, 2 * steps + 1))  # 1..8 once each, not 1..8 then 5..8 again
    assert [int(r["epoch"]) for r in read_log(run / "log.csv")] == [1, 2]
