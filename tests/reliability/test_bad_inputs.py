"""The bad-input sweep: every broken file gets one clear line naming it (and the entry or line), or
under ``--on-bad-image skip`` a counted skip; never a traceback, never a silent wrong answer."""

from __future__ import annotations

import builtins
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from captionlab.cli import main
from captionlab.config import load_config
from captionlab.data.adapters import load_dataset
from captionlab.data.images import BadImageError, load_image


def png(path: Path, img: Image.Image, **kw) -> Path:
    img.save(path, **kw)
    return path


def broken_images(tmp: Path) -> dict[str, Path]:
    ok = png(tmp / "ok.png", Image.new("RGB", (64, 64), (200, 30, 30)))
    data = ok.read_bytes()
    (tmp / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp / "empty.jpg").write_bytes(b"")
    (tmp / "text.jpg").write_text("this is not an image\n")
    (tmp / "folder.jpg").mkdir()
    return {
        "truncated": tmp / "truncated.png",
        "zero-byte": tmp / "empty.jpg",
        "text named .jpg": tmp / "text.jpg",
        "directory named .jpg": tmp / "folder.jpg",
        "missing": tmp / "missing.png",
    }


def odd_but_valid_images(tmp: Path) -> dict[str, Path]:
    cmyk = Image.new("CMYK", (48, 40), (0, 200, 200, 0))
    cmyk.save(tmp / "cmyk.jpg")
    deep = Image.fromarray((np.arange(48 * 40).reshape(40, 48) * 30).astype(np.uint16))  # 16-bit greyscale
    deep.save(tmp / "deep.png")
    pal = Image.new("P", (40, 40))
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.info["transparency"] = 0
    pal.save(tmp / "palette.png", transparency=0)
    return {
        "CMYK": tmp / "cmyk.jpg",
        "16-bit PNG": tmp / "deep.png",
        "palette + transparency": tmp / "palette.png",
        "1x1 pixel": png(tmp / "dot.png", Image.new("RGB", (1, 1), (9, 9, 9))),
    }


@pytest.mark.parametrize("case", ["truncated", "zero-byte", "text named .jpg", "directory named .jpg", "missing"])
def test_a_broken_image_is_named(tmp_path, case):
    path = broken_images(tmp_path)[case]
    with pytest.raises(BadImageError) as e:
        load_image(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_broken_images_through_the_cli_are_one_line_or_counted_skips(trained, tmp_path, capsys):
    _, result = trained
    bad = broken_images(tmp_path)
    ok = tmp_path / "ok.png"
    for path in (bad["truncated"], bad["directory named .jpg"]):
        assert main(["caption", str(result.run_dir / "best.pt"), str(ok), str(path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(path) in err[0] and "--on-bad-image skip" in err[0]
    args = ["caption", str(result.run_dir / "best.pt"), str(ok), *map(str, bad.values()), "--on-bad-image", "skip"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert captured.out.count("\t") == 1 and str(ok) in captured.out
    assert f"captioned 1 image(s), skipped {len(bad)} unreadable" in captured.err and "Traceback" not in captured.err


def test_odd_but_valid_images_are_captioned(trained, tmp_path, capsys):
    _, result = trained
    paths = odd_but_valid_images(tmp_path)
    assert all(load_image(p).mode == "RGB" for p in paths.values())
    assert main(["caption", str(result.run_dir / "best.pt"), *map(str, paths.values())]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(p) for p in paths.values()]
    assert all(len(line.split("\t")[1].split()) >= 2 for line in lines)


def test_exif_rotated_photo_is_captioned_upright(tmp_path):
    img = Image.new("RGB", (60, 20), (0, 0, 255))  # stored sideways: 60 wide, 20 high
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    img.save(tmp_path / "phone.jpg", exif=exif)
    assert load_image(tmp_path / "phone.jpg").size == (20, 60)


def test_decompression_bomb_is_refused_with_the_reason(trained, tmp_path, monkeypatch, capsys):
    _, result = trained
    path = png(tmp_path / "bomb.png", Image.new("RGB", (200, 200)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5_000)  # 40,000 pixels: over twice the limit
    assert main(["caption", str(result.run_dir / "best.pt"), str(path)]) == 2
    err = capsys.readouterr().err
    assert "refusing image" in err and "decompression bomb" in err and str(path) in err
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 30_000)  # over the limit, under twice it: PIL only warns
    assert main(["caption", str(result.run_dir / "best.pt"), str(path)]) == 2
    assert "refusing image" in capsys.readouterr().err


def test_permission_denied_is_named(trained, tmp_path, monkeypatch, capsys):
    _, result = trained
    path = png(tmp_path / "secret.png", Image.new("RGB", (32, 32)))
    real_open = builtins.open

    def guarded(file, *args, **kwargs):  # chmod 000 does not stop root, so deny the read itself
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
    assert main(["caption", str(result.run_dir / "best.pt"), str(path)]) == 2
    err = capsys.readouterr().err
    assert "Permission denied" in err and str(path) in err


# ---------------------------------------------------------------- data files


def karpathy(tmp: Path, images: list | None = None, raw: str | None = None) -> Path:
    path = tmp / "dataset.json"
    if raw is not None:
        path.write_bytes(raw.encode("latin-1") if raw.startswith("\xff") else raw.encode())
        return path
    png(tmp / "a.png", Image.new("RGB", (32, 32)))
    images = (
        images
        if images is not None
        else [{"filename": "a.png", "split": "train", "sentences": [{"raw": "a red circle"}]}]
    )
    path.write_text(json.dumps({"images": images}))
    return path


BAD_DATA = {
    "truncated JSON": (dict(raw='{"images": [{"filename": "a.png", "sen'), r"not valid JSON: line 1, column \d+"),
    "malformed JSON": (dict(raw='{"images": [,]}'), r"not valid JSON: line 1"),
    "a list, not an object": (dict(raw='[{"filename": "a.png"}]'), r"expected an object with an 'images' list"),
    "unknown split": (
        dict(images=[{"filename": "a.png", "split": "tset", "sentences": [{"raw": "x"}]}]),
        r"images\[0\] \(a.png\): unknown split 'tset'",
    ),
    "empty caption": (
        dict(images=[{"filename": "a.png", "split": "train", "sentences": [{"raw": ""}]}]),
        r"images\[0\] \(a.png\) sentences\[0\]: empty caption",
    ),
    "whitespace caption": (
        dict(images=[{"filename": "a.png", "split": "train", "sentences": [{"raw": " \t "}]}]),
        r"sentences\[0\]: empty caption",
    ),
    "sentences not a list": (
        dict(images=[{"filename": "a.png", "sentences": "a red circle"}]),
        r"images\[0\]: 'filename' must be a string and 'sentences' a list",
    ),
    "not UTF-8": (dict(raw="\xff\xfe{}"), r"not UTF-8 text"),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_a_broken_annotation_file_names_file_and_entry(tmp_path, case, capsys):
    kw, message = BAD_DATA[case]
    path = karpathy(tmp_path, **kw)
    with pytest.raises(ValueError, match=message):
        load_dataset(load_config(overrides=[f"data.path={path}", "data.format=karpathy"]).data)


def test_a_500_word_caption_is_cut_not_fatal(tmp_path):
    from captionlab.data.dataset import CaptionGroups
    from captionlab.data.tokenizers import build_tokenizer
    from captionlab.data.vocab import Vocabulary

    long = " ".join(["red"] * 500)
    path = karpathy(tmp_path, [{"filename": "a.png", "split": "train", "sentences": [{"raw": long}]}])
    ds = load_dataset(load_config(overrides=[f"data.path={path}", "data.format=karpathy"]).data)
    tok = build_tokenizer("en_word")
    groups = CaptionGroups(ds.split("train"), Vocabulary.build([["red"]]), tok, lambda im: im, max_len=30)
    assert len(groups.captions[0][0]) == 32  # <start> + 30 words + <end>


def test_a_dataset_of_only_bad_images_says_so(tmp_path, capsys):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"images": [{"filename": "bad.png", "split": "train", "sentences": [{"raw": "x y"}]}]}))
    cfg = load_config(overrides=[f"data.path={path}", "data.format=karpathy", "data.on_bad_image=skip"])
    with pytest.warns(UserWarning, match="skipped 1 unreadable"), pytest.raises(ValueError, match="no usable images"):
        load_dataset(cfg.data)
    code = main(
        [
            "train",
            str(Path("code/configs/tiny/cnn_gru.yaml").resolve()),
            f"data.path={path}",
            "data.format=karpathy",
            f"train.output_dir={tmp_path / 'runs'}",
            "--on-bad-image",
            "skip",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "no usable images" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_a_broken_file_through_the_cli_is_one_line(tmp_path, capsys):
    path = karpathy(tmp_path, raw='{"images": [')
    code = main(
        [
            "train",
            str(Path("code/configs/tiny/cnn_gru.yaml").resolve()),
            f"data.path={path}",
            "data.format=karpathy",
            f"train.output_dir={tmp_path / 'runs'}",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and str(path) in err[0] and "not valid JSON" in err[0]


# ---------------------------------------------------------------- configs, results, checkpoints


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.epoch=3", "unknown config key 'train.epoch'; did you mean 'train.epochs'?"),
        ("train.epochs=abc", "train.epochs = 'abc': expected an integer >= 1"),
        ("model.name=vit_transfomer", "did you mean 'vit_transformer'?"),
        ("data.tokenizer=zh_chars", "did you mean 'zh_char'?"),
    ],
)
def test_config_mistakes_are_one_line(tmp_path, capsys, override, expected):
    code = main(["train", "code/configs/tiny/cnn_gru.yaml", override, f"train.output_dir={tmp_path}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and expected in err[0]


def test_results_with_unknown_ids_are_listed(tmp_path, capsys):
    (tmp_path / "ann.json").write_text(
        json.dumps({"images": [{"id": 1}], "annotations": [{"image_id": 1, "id": 1, "caption": "a red circle"}]})
    )
    (tmp_path / "res.json").write_text(
        json.dumps([{"image_id": 1, "caption": "a red circle"}, {"image_id": 77, "caption": "x"}])
    )
    assert main(["score", str(tmp_path / "res.json"), str(tmp_path / "ann.json"), "--fast"]) == 2
    err = capsys.readouterr().err
    assert "77" in err and "res.json" in err and "ann.json" in err


@pytest.mark.parametrize(
    "payload, expected",
    [
        ({"format": 99, "model": {}, "config": {}, "vocab": [], "epoch": 1}, "format 99"),
        ({"state_dict": {"w": torch.zeros(1)}}, "not a captionlab checkpoint"),
    ],
)
def test_foreign_or_future_checkpoints_are_one_line(tmp_path, capsys, payload, expected):
    buf = io.BytesIO()
    torch.save(payload, buf)
    (tmp_path / "x.pt").write_bytes(buf.getvalue())
    assert main(["caption", str(tmp_path / "x.pt"), "img.png"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0]


def test_mismatched_ensemble_is_refused(trained, trained_clipcap, trained_attention, capsys):
    words, gpt2 = trained[1].run_dir / "best.pt", trained_clipcap[1].run_dir / "best.pt"
    assert main(["caption", str(words), str(gpt2), "img.png"]) == 2  # a word list vs GPT-2's tokenizer
    assert "their vocabularies differ" in capsys.readouterr().err
    sizes = trained_attention[1].run_dir / "best.pt"  # same words, 64 px vs 96 px input
    assert main(["caption", str(words), str(sizes), "img.png"]) == 2
    assert "input sizes differ" in capsys.readouterr().err
