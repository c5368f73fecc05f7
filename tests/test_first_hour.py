"""What a new user meets first: typed config errors, no debris from a failed start, one-line messages
from the CLI, readable figures, honest progress output."""

from __future__ import annotations

import io
import json

import matplotlib
import pytest
import torch

from captionlab.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from captionlab.cli import build_parser, main, parse_args
from captionlab.config import ConfigError, load_config
from conftest import TINY

matplotlib.use("Agg")


@pytest.mark.parametrize(
    "override, words",
    [
        ("train.epochs=abc", ["train.epochs", "'abc'", "an integer >= 1"]),
        ("train.lr=fast", ["train.lr", "'fast'", "a number > 0"]),
        ("train.epochs=-1", ["train.epochs", "-1", ">= 1"]),
        ("decode.beam_size=-2", ["decode.beam_size", ">= 1"]),
        ("model.dropout=1.5", ["model.dropout", "< 1"]),
        ("train.amp=maybe", ["train.amp", "true or false"]),
        ("data.on_bad_image=skp", ["data.on_bad_image", "error, skip", "did you mean 'skip'"]),
        ("model.name=cnn_gr", ["model.name", "did you mean 'cnn_gru'"]),
        ("train.device=gpu", ["train.device", "cuda:N"]),
        ("model.encoder=resnet18", ["model.encoder", "mapping"]),
        ("train.epoch=3", ["unknown config key 'train.epoch'", "did you mean 'train.epochs'"]),
    ],
)
def test_a_bad_value_is_named_with_what_is_expected(override, words):
    with pytest.raises(ConfigError) as e:
        load_config(TINY, [override])
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_yaml_values_are_checked_like_overrides(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  batch_size: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"train.batch_size = \[1, 2\]: expected an integer >= 1"):
        load_config(bad)
    assert load_config(TINY, ["train.lr=1e-4"]).train.lr == pytest.approx(1e-4)  # YAML 1.1 calls 1e-4 a string


def test_a_failed_start_leaves_no_run_folder(tmp_path, capsys):
    base = [str(TINY), f"train.output_dir={tmp_path}", "--no-progress"]
    assert main(["train", *base, "train.epochs=abc"]) == 2
    assert main(["train", *base, f"data.path={tmp_path / 'missing.json'}", "data.format=karpathy"]) == 2
    err = capsys.readouterr().err
    assert "train.epochs = 'abc'" in err and "annotation file not found" in err
    assert not (tmp_path / "tiny_cnn_gru").exists()


def test_train_accepts_on_bad_image_and_the_overrides_after_it(tmp_path):
    args = parse_args(["train", str(TINY), "train.epochs=1", "--on-bad-image", "skip", "decode.max_len=5"])
    assert args.on_bad_image == "skip" and args.overrides == ["train.epochs=1", "decode.max_len=5"]


def test_every_option_of_every_command_says_what_it_does():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert "thin wrappers" not in (parser.description or "")
    for name, p in sub.choices.items():
        for action in p._actions:
            if action.dest != "help":
                assert action.help, f"captionlab {name}: {action.option_strings or action.dest} has no help"
    assert "(default: 64)" in sub.choices["evaluate"].format_help()


def _score(tmp_path, results, annotations, capsys):
    r, a = tmp_path / "res.json", tmp_path / "ann.json"
    for path, content in ((r, results), (a, annotations)):
        if content is not None:
            path.write_text(content if isinstance(content, str) else json.dumps(content))
    code = main(["score", str(r), str(a), "--tokenizer", "simple", "--metrics", "Bleu"])
    return code, capsys.readouterr().err


ANN = {
    "images": [{"id": 1}, {"id": 2}],
    "annotations": [{"image_id": 1, "caption": "a red circle"}, {"image_id": 2, "caption": "a blue box"}],
}


def test_score_names_the_right_file_once_and_plainly(tmp_path, capsys):
    code, err = _score(tmp_path, None, ANN, capsys)
    assert code == 2 and "results file not found" in err and "res.json" in err
    code, err = _score(tmp_path, '[{"image_id": 1, ', ANN, capsys)
    assert code == 2 and "results file" in err and "is not valid JSON: line 1" in err and "at at" not in err
    code, err = _score(
        tmp_path, [{"image_id": 1, "caption": "a red circle"}, {"image_id": 7, "caption": "x"}], ANN, capsys
    )
    assert code == 2 and err.count("\n") == 1 and "7" in err and "res.json" in err and "ann.json" in err
    code, err = _score(tmp_path, [{"image_id": 1, "caption": "a red circle"}], ANN, capsys)
    assert code == 0 and err == "captionlab: warning: 1 annotated image(s) have no result and are not scored\n"


@pytest.mark.parametrize(
    "content, words",
    [
        (b"train:\n  epochs: 3\n", "not a PyTorch checkpoint"),
        (b"hello, I am text", "not a PyTorch checkpoint"),
        (b"", "empty (0 bytes)"),
    ],
)
def test_a_file_that_is_not_a_checkpoint_gets_one_line(tmp_path, capsys, content, words):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    assert main(["caption", str(path), "x.png"]) == 2
    err = capsys.readouterr().err
    assert words in err and "weights_only" not in err and err.count("\n") == 1
    assert "captionlab checkpoint is the best.pt / last.pt" in err


def test_checkpoint_other_tools_newer_formats_and_missing_keys(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a captionlab checkpoint"):
        read_checkpoint(tmp_path / "other.pt")
    torch.save({"format": 99, "model": {}}, tmp_path / "newer.pt")
    with pytest.raises(CheckpointError, match="format 99.*upgrade"):
        read_checkpoint(tmp_path / "newer.pt")
    torch.save({"format": 2, "model": {}, "config": {}}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="missing vocab, epoch"):
        read_checkpoint(tmp_path / "partial.pt")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "pickled.pt")  # a whole module: needs unpickling code
    with pytest.raises(CheckpointError, match="does not unpickle"):
        read_checkpoint(tmp_path / "pickled.pt")


def test_format_1_checkpoints_read_with_one_based_epochs(tmp_path):
    path = save_checkpoint(
        tmp_path / "old.pt", model_state={}, config={}, vocab=[], epoch=0, extra={"best": {"epoch": 0}}
    )
    raw = torch.load(path, weights_only=True)
    raw["format"], raw["epoch"] = 1, 3  # format 1 counted from 0
    torch.save(raw, path)
    ckpt = read_checkpoint(path)
    assert ckpt["format"] == 2 and ckpt["epoch"] == 4 and ckpt["extra"]["best"]["epoch"] == 1


def test_empty_or_directory_images_are_named_as_such(tmp_path):
    from captionlab.data.images import BadImageError, load_image

    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "dir.jpg").mkdir()
    with pytest.raises(BadImageError, match=r"empty \(0 bytes\)"):
        load_image(tmp_path / "zero.jpg")
    with pytest.raises(BadImageError, match="is a directory"):
        load_image(tmp_path / "dir.jpg")


def test_line_progress_prints_a_few_lines_not_carriage_returns():
    from captionlab.progress import LineProgress

    out = io.StringIO()
    bar = LineProgress(range(100), "work", None, "it", stream=out)
    bar.quiet_s = 0.0
    for _ in bar:
        bar.set_postfix(loss="1.0")
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and "\r" not in out.getvalue()
    assert (
        lines[0].startswith("work:  25% (25/100 it)") and lines[-1].startswith("work: 100%") and "loss=1.0" in lines[-1]
    )
    assert " ETA 0:00" in lines[0] and "ETA" not in lines[-1]  # time left, while there is some
    quiet = io.StringIO()
    list(LineProgress(range(100), "short", None, "it", stream=quiet))  # a loop under quiet_s stays silent
    assert quiet.getvalue() == ""


def test_caption_grid_keeps_every_caption_inside_the_figure_and_off_the_images():
    from PIL import Image

    from captionlab.viz import caption_grid

    images = [Image.new("RGB", (64, 64), c) for c in ("red", "green", "blue", "white", "black", "gray")]
    caps = ["a caption " * k for k in (1, 12, 3, 25, 2, 7)]
    fig = caption_grid(images, caps, references=["the reference " * k for k in (9, 1, 4, 2, 14, 3)], cols=3)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    whole = fig.bbox
    image_boxes = [ax.get_window_extent(renderer) for ax in fig.axes if ax.images]
    texts = [t for ax in fig.axes for t in ax.texts]
    assert len(image_boxes) == 6 and len(texts) == 12
    for t in texts:
        box = t.get_window_extent(renderer)
        assert whole.x0 - 1 <= box.x0 and box.x1 <= whole.x1 + 1 and whole.y0 - 1 <= box.y0 and box.y1 <= whole.y1 + 1
        assert not any(box.overlaps(b) for b in image_boxes), t.get_text()[:30]
    assert {t.get_color() for t in texts} == {"black", "#555555"}  # model words vs reference, told apart


def test_curves_have_whole_epoch_ticks(tmp_path):
    from captionlab.viz import plot_training_curves

    log = tmp_path / "log.csv"
    log.write_text("epoch,step,train_loss,lr,CIDEr\n1,10,2.0,0.001,0.3\n2,20,1.5,0.001,0.5\n3,30,1.2,0.001,0.6\n")
    fig = plot_training_curves(log)
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
