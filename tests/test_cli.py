"""The command line: each subcommand runs, writes what it says, and fails with a clear message."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from captionlab.cli import main
from captionlab.config import load_config
from captionlab.data import load_dataset
from conftest import CONFIGS, ROOT

pytestmark = pytest.mark.slow


def test_console_script_synthesises_a_dataset(tmp_path):
    exe = Path(sys.executable).with_name("captionlab")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "captionlab.cli"]
    out = subprocess.run(
        cmd + ["synth", "--out", str(tmp_path), "--n", "12", "--seed", "3"], capture_output=True, text=True, check=True
    )
    assert "dataset_synthetic.json" in out.stdout
    assert len(list((tmp_path / "images").glob("*.png"))) == 12


def test_relative_paths_are_the_working_directorys_not_the_repositorys(tmp_path, monkeypatch, capsys):
    """One rule, as for any command-line tool: `synth --out`, a config's data.path and train.output_dir,
    given relative, land under the working directory (they used to land in the checkout)."""
    monkeypatch.chdir(tmp_path)
    assert main(["synth", "--out", "mydata", "--n", "20", "--size", "32"]) == 0
    assert (tmp_path / "mydata" / "dataset_synthetic.json").is_file() and not (ROOT / "mydata").exists()
    config = str(CONFIGS / "tiny" / "cnn_gru.yaml")
    overrides = ["data.path=mydata", "data.synthetic_n=20", "data.synthetic_size=32", "train.output_dir=runs"]
    assert main(["train", config, *overrides, "train.epochs=1", "train.run_name=here", "--no-progress"]) == 0
    assert (tmp_path / "runs" / "here" / "best.pt").is_file() and not (ROOT / "runs").exists()
    assert f"at {tmp_path / 'mydata'}" in capsys.readouterr().out  # the data it read is the one made here


def test_train_cli_runs_a_config_refuses_to_reuse_its_folder_and_overwrites_on_request(tmp_path, capsys):
    """A run folder with any run file in it (not only last.pt) is refused with a message, untouched;
    --overwrite starts again and removes the old run's files and evaluations (eval_* described the old model)."""
    from conftest import TINY

    args = [
        "train",
        str(TINY),
        f"train.output_dir={tmp_path}",
        f"data.path={tmp_path / 'data'}",
        "data.synthetic_n=30",
        "train.epochs=1",
        "train.run_name=cli",
        "--no-progress",
    ]
    assert main(args) == 0
    run = tmp_path / "cli"
    assert (run / "best.pt").is_file() and (run / "curves.png").is_file()
    (run / "eval_test_beam3").mkdir()
    (run / "eval_test_beam3" / "metrics.json").write_text("{}")
    (run / "last.pt").unlink()  # best.pt, log.csv and an evaluation are left: still a run
    best = (run / "best.pt").read_bytes()
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{run} already holds a run (best.pt, log.csv" in err and "--overwrite" in err and err.count("\n") == 1
    assert (run / "best.pt").read_bytes() == best and not (run / "last.pt").exists()  # nothing touched
    assert main([*args, "--overwrite"]) == 0
    assert (run / "last.pt").is_file() and not (run / "eval_test_beam3").exists()
    assert len((run / "log.csv").read_text().splitlines()) == 2  # header + the new run's one epoch


def test_evaluate_writes_results_and_metrics_that_score_reproduces(trained, tmp_path, capsys):
    cfg, result = trained
    out = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                str(result.run_dir / "best.pt"),
                "--split",
                "test",
                "--beam-size",
                "2",
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "CIDEr" in printed and "METEOR" in printed
    results = json.loads((out / "results.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(results) == len(load_dataset(cfg.data).split("test")) == metrics["images"]
    assert (
        main(
            [
                "score",
                str(out / "results.json"),
                str(out / "annotations.json"),
                "--metrics",
                "Bleu,ROUGE_L,CIDEr",
                "--out",
                str(tmp_path / "again.json"),
            ]
        )
        == 0
    )
    again = json.loads((tmp_path / "again.json").read_text())
    for k in ("Bleu_4", "ROUGE_L", "CIDEr"):
        assert again[k] == pytest.approx(metrics["metrics"][k], abs=1e-9)


def test_evaluate_data_reads_a_synthetic_folder_as_it_is_and_never_remakes_it(trained, tmp_path):
    """`evaluate --data DIR --format synthetic` on a set made with other settings than the checkpoint's:
    it is read as it is (it used to be regenerated in place with the checkpoint's size of set)."""
    from captionlab.data import synthetic

    cfg, result = trained
    ann = synthetic.generate(tmp_path / "other", n=60, seed=5, size=cfg.data.synthetic_size)
    before = ann.read_bytes()
    out = tmp_path / "eval"
    args = ["evaluate", str(result.run_dir / "best.pt"), "--data", str(tmp_path / "other"), "--format", "synthetic"]
    assert main([*args, "--out", str(out), "--metrics", "CIDEr", "--tokenizer", "ptb-python", "--no-progress"]) == 0
    assert ann.read_bytes() == before and len(list((tmp_path / "other").rglob("*.png"))) == 60
    assert len(json.loads((out / "results.json").read_text())) == 6  # the 10 % test split of 60


def test_evaluate_reads_another_dataset_given_by_data_format_and_image_root(trained, tmp_path, capsys):
    """`evaluate --data F --format karpathy --image-root D`: the checkpoint scored on a dataset its config
    does not name, images found under D; the captions are those of the same images in the original split."""
    from captionlab import load_checkpoint

    cfg, result = trained
    test = load_dataset(cfg.data).split("test")[:5]
    images = [
        {"filename": r.path.name, "split": "test", "imgid": i, "sentences": [{"raw": c} for c in r.captions]}
        for i, r in enumerate(test)
    ]
    (tmp_path / "other.json").write_text(json.dumps({"images": images}))
    out = tmp_path / "eval"
    args = ["evaluate", str(result.run_dir / "best.pt"), "--data", str(tmp_path / "other.json"), "--format", "karpathy"]
    args += ["--image-root", str(test[0].path.parent), "--out", str(out), "--metrics", "Bleu,CIDEr", "--device", "cpu"]
    assert main([*args, "--tokenizer", "simple", "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    expected = load_checkpoint(result.run_dir / "best.pt", "cpu").caption([r.path for r in test])
    assert [r["caption"] for r in sorted(results, key=lambda r: r["image_id"])] == expected
    assert json.loads((out / "metrics.json").read_text())["images"] == 5
    args = args[: args.index("--out")] + ["--metrics", "Bleu", "--tokenizer", "simple", "--no-progress"]
    assert main(args) == 0  # no --out: named after the data, beside (never over) the in-domain evaluation
    assert (result.run_dir / "eval_other_test_beam3" / "results.json").is_file()
    capsys.readouterr()
    assert main(["evaluate", str(result.run_dir / "best.pt"), "--image-root", str(tmp_path)]) == 2  # it was ignored
    assert "--image-root describe --data, which is not given" in capsys.readouterr().err


def test_caption_prints_path_tab_caption_and_matches_the_api(trained, tmp_path, capsys):
    from captionlab import load_checkpoint

    cfg, result = trained
    paths = [str(r.path) for r in load_dataset(cfg.data).split("test")[:3]]
    assert main(["caption", str(result.run_dir / "best.pt"), *paths, "--beam-size", "3", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().split("\n")
    expected = load_checkpoint(result.run_dir / "best.pt", "cpu").caption(paths, beam_size=3)
    assert [line.split("\t") for line in lines] == [[p, c] for p, c in zip(paths, expected)]
    assert main(["caption", str(result.run_dir / "best.pt"), *paths, "--length-penalty", "3", "--device", "cpu"]) == 0
    api = load_checkpoint(result.run_dir / "best.pt", "cpu")
    api.config.decode.length_penalty = 3.0  # the Python API's setting of it
    expected = api.caption(paths)
    assert [line.split("\t")[1] for line in capsys.readouterr().out.strip().split("\n")] == expected


def test_caption_reports_a_bad_image_or_skips_it(trained, tmp_path, capsys):
    cfg, result = trained
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    assert main(["caption", str(result.run_dir / "best.pt"), str(bad), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "--on-bad-image skip" in err and err.count("\n") == 1
    shutil.copy(load_dataset(cfg.data).split("test")[0].path, tmp_path / "good.png")
    assert (
        main(["caption", str(result.run_dir / "best.pt"), str(tmp_path), "--on-bad-image", "skip", "--device", "cpu"])
        == 0
    )
    out = capsys.readouterr()
    assert "good.png\t" in out.out and "skipped" in out.err
    (tmp_path / "empty").mkdir()
    assert main(["caption", str(result.run_dir / "best.pt"), str(tmp_path / "empty"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "empty is a directory with no images in it (.bmp," in err and "not an image file" not in err


def test_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main(["caption", str(tmp_path / "nope.pt"), "x.png"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_missing_pretrained_weights_say_where_to_put_them(tmp_path, monkeypatch, capsys):
    from conftest import TINY

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("CAPTIONLAB_OFFLINE", "1")  # the download path is tested in test_pretrained_weights.py
    code = main(
        [
            "train",
            str(TINY),
            f"train.output_dir={tmp_path}",
            f"data.path={tmp_path / 'data'}",
            "data.synthetic_n=6",
            "model.encoder.name=resnet18",
            "model.encoder.pretrained=true",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "resnet18-f37072fd.pth" in err and str(tmp_path / "torch_home") in err and "pretrained=false" in err


def test_local_pretrained_weights_file_is_loaded(tmp_path):
    from torchvision.models import resnet18

    from captionlab.config import EncoderConfig
    from captionlab.models.encoders import ResNetEncoder

    torch.manual_seed(0)
    ref = resnet18()
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    enc = ResNetEncoder(EncoderConfig(name="resnet18", pretrained=True, weights=str(tmp_path / "r18.pth")))
    assert torch.equal(enc.body[0].weight, ref.conv1.weight)
    assert not enc.trainable and not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.body[1].training  # a frozen CNN keeps its BatchNorm statistics


def test_demo_refuses_to_replace_a_run_it_does_not_own(tmp_path, capsys):
    """`captionlab demo --config X` used to train with overwrite=True and wipe whatever run X names."""
    from conftest import TINY

    run = tmp_path / "tiny_cnn_gru"
    run.mkdir()
    (run / "last.pt").write_bytes(b"a user's checkpoint")
    args = ["demo", "--config", str(TINY), f"train.output_dir={tmp_path}", f"data.path={tmp_path / 'data'}"]
    assert main([*args, "data.synthetic_n=6", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--overwrite" in err
    assert (run / "last.pt").read_bytes() == b"a user's checkpoint" and not (tmp_path / "data").exists()


def test_demo_leaves_a_demo_named_run_of_another_config(tmp_path, capsys):
    """code/configs/demo/cnn_gru.yaml (ResNet-18, the notebooks' default) trained into demo_cnn_gru, and
    make demo replaced it: a demo_* folder is the demo's only if the demo's config made it."""
    from captionlab.config import save_config
    from conftest import CONFIGS

    assert not load_config(CONFIGS / "demo" / "cnn_gru.yaml").train.run_name.startswith("demo_")
    run = tmp_path / "demo_cnn_gru"
    run.mkdir()
    save_config(load_config(CONFIGS / "demo" / "cnn_gru.yaml"), run / "config.yaml")  # not the demo's model
    (run / "best.pt").write_bytes(b"17 minutes of ResNet-18 training")
    assert main(["demo", f"train.output_dir={tmp_path}", f"data.path={tmp_path / 'data'}", "--no-progress"]) == 2
    assert "already holds a run" in capsys.readouterr().err and (run / "best.pt").read_bytes().startswith(b"17")


def test_demo_runs_end_to_end_compares_its_two_models_and_replaces_its_own_runs(tmp_path, capsys):
    """`captionlab demo` with its own two configs (60 images, 1 epoch): the four steps, both models'
    metric tables and sample captions, curves and sample grid, the comparison page of Show-Attend-Tell (B)
    against CNN+GRU (A) with its path printed last, the synthetic-only note; run again, it replaces its
    own demo_* runs."""
    import json

    from test_report import page_data

    args = ["demo", f"train.output_dir={tmp_path / 'runs'}", f"data.path={tmp_path / 'data'}"]
    args += ["data.synthetic_n=60", "train.epochs=1", "--beam-size", "2", "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    for words in ("[1/4] data", "[2/4] training cnn_gru", "[2/4] training show_attend_tell", "[3/4] evaluating"):
        assert words in out
    assert "[4/4] sample test captions" in out and "cannot caption photographs" in out
    assert out.count("CIDEr") >= 2 and "METEOR" in out
    page = tmp_path / "runs" / "demo_report.html"
    assert f"report: {page}" in out
    data = page_data(page)
    assert (
        data["compare"]
        and len(data["rows"])
        == json.loads((tmp_path / "runs" / "demo_cnn_gru" / "eval_test_beam2" / "metrics.json").read_text())["images"]
    )
    assert "demo_show_attend_tell" in page.read_text() and "demo_cnn_gru" in page.read_text()
    assert out.count("model: '") == 2 * min(8, len(data["rows"]))  # both models' captions of the first images
    for run in ("demo_cnn_gru", "demo_show_attend_tell"):
        for name in ("best.pt", "curves.png", "eval_test_beam2/metrics.json", "eval_test_beam2/report.html"):
            assert (tmp_path / "runs" / run / name).is_file(), name
    assert (tmp_path / "runs" / "demo_show_attend_tell" / "samples.png").is_file()
    stale = tmp_path / "runs" / "demo_cnn_gru" / "eval_test_beam2" / "stale.txt"
    stale.write_text("from the first run")
    assert main(args) == 0  # its own runs: replaced without --overwrite, old evaluations gone
    assert not stale.exists() and (tmp_path / "runs" / "demo_cnn_gru" / "best.pt").is_file()


def test_a_misspelt_metric_is_refused_before_anything_is_loaded(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "no.pt"), "--metrics", "CIDEr,BLEU"]) == 2  # no checkpoint read
    err = capsys.readouterr().err
    assert err == "captionlab evaluate: error: unknown metric 'BLEU'; known: Bleu, CIDEr, METEOR, ROUGE_L, SPICE\n"


def test_expected_errors_are_one_line_and_bugs_keep_their_traceback(tmp_path, monkeypatch, capsys):
    """A mistake the user can fix (here a registry's UnknownNameError, a KeyError) is one line with its
    whole message; a KeyError or ValueError from a bug is not turned into one (before, the CLI printed
    only the key of any KeyError and hid every ValueError's traceback)."""
    import captionlab.metrics
    from captionlab.registry import Registry

    (tmp_path / "r.json").write_text("[]")
    score = ["score", str(tmp_path / "r.json"), str(tmp_path / "r.json")]
    monkeypatch.setattr(captionlab.metrics, "score_files", lambda *a, **k: Registry("metric for this test").get("X"))
    assert main(score) == 2
    assert capsys.readouterr().err == "captionlab score: error: unknown metric for this test 'X'; known: (none)\n"

    def bug(*args, **kwargs):
        return {}["a key that a bug looks up"]

    monkeypatch.setattr(captionlab.metrics, "score_files", bug)
    with pytest.raises(KeyError, match="a key that a bug looks up"):
        main(score)
    monkeypatch.setattr(captionlab.metrics, "score_files", lambda *a, **k: int("not a number"))
    with pytest.raises(ValueError, match="invalid literal"):
        main(score)


def test_java_is_checked_before_the_work(tmp_path, capsys, monkeypatch, trained):
    """make demo and evaluate used to find Java missing only when scoring, after training or captioning."""
    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "java" else real(name, *a, **k))
    assert main(["demo", f"train.output_dir={tmp_path}", f"data.path={tmp_path / 'data'}", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "'java' is not on PATH" in err and "default-jre-headless" in err and not (tmp_path / "data").exists()
    best = trained[1].run_dir / "best.pt"
    assert main(["evaluate", str(best), "--out", str(tmp_path / "eval"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "METEOR and the PTB tokenizer" in err and "--tokenizer ptb-python --metrics Bleu,ROUGE_L,CIDEr" in err
    assert not (tmp_path / "eval").exists()  # nothing captioned


def test_caption_streams_a_folder_in_batches_and_writes_coco_results(trained, tmp_path, capsys, monkeypatch):
    """It read every image of a folder into memory before captioning any; --out FILE.json is new."""
    import captionlab.commands.caption as caption_cmd
    from captionlab import load_checkpoint

    cfg, result = trained
    folder = tmp_path / "photos"
    folder.mkdir()
    for r in load_dataset(cfg.data).split("test")[:5]:
        shutil.copy(r.path, folder / r.path.name)
    read_sizes, real = [], caption_cmd.read_images
    monkeypatch.setattr(
        caption_cmd, "read_images", lambda paths, bad: read_sizes.append(len(paths)) or real(paths, bad)
    )
    out = tmp_path / "results.json"
    args = ["caption", str(result.run_dir / "best.pt"), str(folder), "--batch-size", "2", "--out", str(out)]
    assert main([*args, "--device", "cpu"]) == 0
    assert read_sizes == [2, 2, 1]  # never more than a batch of images in memory
    lines = capsys.readouterr().out.strip().split("\n")
    paths = sorted(folder.iterdir())
    expected = load_checkpoint(result.run_dir / "best.pt", "cpu").caption(paths)
    assert [line.split("\t") for line in lines] == [[str(p), c] for p, c in zip(paths, expected)]
    rows = json.loads(out.read_text())
    assert rows == [{"image_id": i, "file_name": str(p), "caption": c} for i, (p, c) in enumerate(zip(paths, expected))]


def test_caption_n_best_prints_ranked_beams_and_writes_them(trained, tmp_path, capsys):
    from captionlab import load_checkpoint
    from captionlab.data.images import load_image

    cfg, result = trained
    image = load_dataset(cfg.data).split("test")[0].path
    out = tmp_path / "results.json"
    ckpt = str(result.run_dir / "best.pt")
    assert (
        main(["caption", ckpt, str(image), "--n-best", "3", "--beam-size", "3", "--out", str(out), "--device", "cpu"])
        == 0
    )
    lines = [line.split("\t") for line in capsys.readouterr().out.strip().split("\n")]
    assert [(p, rank) for p, rank, _, _ in lines] == [(str(image), "1"), (str(image), "2"), (str(image), "3")]
    scores = [float(s) for *_, s in lines]
    assert scores == sorted(scores, reverse=True) and len({c for _, _, c, _ in lines}) == 3
    ranked = load_checkpoint(ckpt, "cpu").n_best([load_image(image)], 3, beam_size=3)[0]
    assert [(c, f"{s:.3f}") for c, s in ranked] == [(c, s) for _, _, c, s in lines]
    rows = json.loads(out.read_text())
    assert [b["caption"] for b in rows[0]["n_best"]] == [c for _, _, c, _ in lines] and rows[0]["caption"] == lines[0][
        2
    ]
    assert main(["caption", ckpt, str(image), "--n-best", "4", "--beam-size", "3"]) == 2
    assert "--n-best 4 needs a beam at least as wide" in capsys.readouterr().err
