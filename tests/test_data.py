"""Vocabulary, tokenizer, synthetic generator and dataset adapters, including bad input."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captionlab.config import DataConfig
from captionlab.data import BadImageError, Vocabulary, build_tokenizer, load_dataset, load_image, synthetic
from captionlab.data.dataset import CaptionGroups, ImageRecord
from captionlab.errors import InputError


# ---------------------------------------------------------------- vocabulary and tokenizer
def test_vocabulary_round_trip_and_min_freq():
    tok = build_tokenizer("en_word")
    sents = [tok.tokenize(s) for s in ["A red circle.", "a Blue square", "a red square!"]]
    vocab = Vocabulary.build(sents, min_freq=2)
    assert vocab.itos[:4] == ["<pad>", "<start>", "<end>", "<unk>"]
    assert vocab.itos[4:] == ["a", "red", "square"]  # by frequency, ties alphabetical
    ids = vocab.encode(tok.tokenize("a red circle"))
    assert ids == [1, vocab.stoi["a"], vocab.stoi["red"], vocab.unk_id, 2]
    assert vocab.decode(ids) == ["a", "red", "<unk>"]
    assert Vocabulary(vocab.to_list()) == vocab
    assert vocab.encode(["a", "a", "a"], max_len=2) == [1, 4, 4, 2]


def test_vocabulary_rejects_a_list_without_special_tokens():
    with pytest.raises(ValueError, match="must start with"):
        Vocabulary(["a", "b", "c", "d"])


def test_tokenizer_drops_punctuation_and_lowercases():
    assert build_tokenizer("en_word").tokenize("Two GREEN triangles, left; it's here.") == [
        "two",
        "green",
        "triangles",
        "left",
        "it",
        "'s",  # the PTB tokenizer's clitic, as the scorer counts it
        "here",
    ]


# ---------------------------------------------------------------- synthetic dataset
def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_synthetic_same_seed_gives_identical_bytes(tmp_path):
    synthetic.generate(tmp_path / "a", n=30, seed=7)
    synthetic.generate(tmp_path / "b", n=30, seed=7)
    synthetic.generate(tmp_path / "c", n=30, seed=8)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_regenerating_over_other_settings_leaves_only_the_new_set(tmp_path, monkeypatch):
    """A smaller set over a larger one keeps none of the old PNGs; a regeneration cut short leaves no
    annotation file describing half-new images (before: the old one stayed, then was rewritten in place)."""
    synthetic.ensure(tmp_path, n=12, seed=0, size=32)
    ann = synthetic.ensure(tmp_path, n=6, seed=1, size=32)
    names = {im["filename"] for im in json.loads(ann.read_text())["images"]}
    assert sorted(p.name for p in (tmp_path / "images").glob("*.png")) == sorted(names) and len(names) == 6
    calls = {"n": 0}
    real = synthetic.render_scene

    def dies_after_three(*args):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(synthetic, "render_scene", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        synthetic.ensure(tmp_path, n=6, seed=2, size=32)
    assert not ann.exists()  # the next ensure() regenerates instead of trusting a file about other images
    monkeypatch.setattr(synthetic, "render_scene", real)
    again = synthetic.ensure(tmp_path, n=6, seed=2, size=32)
    assert json.loads(again.read_text())["meta"]["seed"] == 2 and not list(tmp_path.glob(".*.tmp"))


def test_synthetic_records_carry_captions_boxes_and_all_splits(tmp_path):
    ann = synthetic.generate(tmp_path, n=60, seed=0, size=96)
    data = json.loads(ann.read_text())
    assert {im["split"] for im in data["images"]} == {"train", "val", "test"}
    for im in data["images"]:
        raws = [s["raw"] for s in im["sentences"]]
        assert len(set(raws)) >= 3
        assert 1 <= len(im["objects"]) <= 3
        for obj in im["objects"]:
            x, y, w, h = obj["bbox"]
            assert 0 <= x and 0 <= y and x + w <= 96 + 1 and y + h <= 96 + 1
            # every object's colour is named in some caption
            assert any(obj["name"].split()[1] in r for r in raws)
    with Image.open(tmp_path / "images" / data["images"][0]["filename"]) as img:
        assert img.size == (96, 96) and img.mode == "RGB"


def test_synthetic_colour_is_where_the_box_says(tmp_path):
    ann = synthetic.generate(tmp_path, n=10, seed=3)
    for im in json.loads(ann.read_text())["images"]:
        pixels = np.asarray(Image.open(tmp_path / "images" / im["filename"]))
        for obj in im["objects"]:
            x, y, w, h = obj["bbox"]
            colour = np.array(synthetic.COLOURS[obj["name"].split()[1]])
            centre = pixels[y + h // 2 - 1 : y + h // 2 + 2, x + w // 2 - 1 : x + w // 2 + 2].reshape(-1, 3)
            assert (np.abs(centre.astype(int) - colour).sum(1) < 40).any(), obj


# ---------------------------------------------------------------- fixtures for adapters
def _karpathy(tmp: Path, images: list[dict]) -> Path:
    (tmp / "imgs").mkdir(exist_ok=True)
    path = tmp / "dataset_test.json"
    path.write_text(json.dumps({"dataset": "test", "images": images}))
    return path


def _entry(name: str, split: str, caps: list[str], i: int) -> dict:
    return {
        "filepath": "imgs",
        "filename": name,
        "imgid": i,
        "split": split,
        "sentences": [{"raw": c, "tokens": c.split()} for c in caps],
    }


def _rgb(path: Path, colour=(200, 30, 30), mode: str = "RGB") -> Path:
    img = Image.new("RGB", (40, 30), colour)
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path)
    return path


def _cfg(path: Path, **kw) -> DataConfig:
    return DataConfig(format=kw.pop("format", "karpathy"), path=str(path), **kw)


def test_karpathy_adapter_reads_splits_and_restval(tmp_path):
    path = _karpathy(
        tmp_path,
        [
            _entry("0.png", "train", ["a red box"], 0),
            _entry("1.png", "restval", ["a b"], 1),
            _entry("2.png", "test", ["x y", "z"], 2),
        ],
    )
    for i in range(3):
        _rgb(tmp_path / "imgs" / f"{i}.png")
    ds = load_dataset(_cfg(path))
    assert ds.splits() == {"train": 2, "test": 1}
    assert ds.references("test") == {2: ["x y", "z"]}
    assert ds.coco_annotations("test")["annotations"][1]["caption"] == "z"


def test_missing_image_names_the_file_or_is_skipped_with_a_warning(tmp_path):
    path = _karpathy(tmp_path, [_entry("ok.png", "train", ["a"], 0), _entry("gone.png", "train", ["b"], 1)])
    _rgb(tmp_path / "imgs" / "ok.png")
    with pytest.raises(BadImageError, match="gone.png"):
        load_dataset(_cfg(path))
    with pytest.warns(UserWarning, match="skipped 1 unreadable image"):
        ds = load_dataset(_cfg(path, on_bad_image="skip"))
    assert [r.path.name for r in ds.records] == ["ok.png"]


def test_broken_json_names_the_file(tmp_path):
    path = tmp_path / "dataset_bad.json"
    path.write_text('{"images": [ {"filename": "a.png", ')
    with pytest.raises(ValueError, match=r"dataset_bad.json is not valid JSON: line 1, column 36"):
        load_dataset(_cfg(path))


def test_empty_caption_names_the_file_and_entry(tmp_path):
    path = _karpathy(tmp_path, [_entry("a.png", "train", ["fine"], 0), _entry("b.png", "train", ["ok", "  "], 1)])
    with pytest.raises(ValueError, match=r"images\[1\] \(b.png\) sentences\[1\]: empty caption"):
        load_dataset(_cfg(path))


def _good_and_truncated(tmp_path: Path) -> Path:
    noise = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    (tmp_path / "imgs").mkdir()
    Image.fromarray(noise).save(tmp_path / "imgs" / "good.jpg", quality=95)
    data = (tmp_path / "imgs" / "good.jpg").read_bytes()
    (tmp_path / "imgs" / "bad.jpg").write_bytes(data[: len(data) // 2])  # truncated: its header is whole
    (tmp_path / "imgs" / "page.jpg").write_text("<!DOCTYPE html><html>saved web page</html>")
    entries = [_entry("good.jpg", "train", ["a"], 0), _entry("bad.jpg", "train", ["b"], 1)]
    return _karpathy(tmp_path, [*entries, _entry("page.jpg", "test", ["c"], 2)])


def test_loading_checks_headers_of_the_splits_in_use_only(tmp_path):
    """A web page named .jpg fails at load from its first bytes, but only where its split is in use; a
    truncated JPEG (whole header) is not decoded at load: reading it later follows data.on_bad_image."""
    path = _good_and_truncated(tmp_path)
    with pytest.raises(BadImageError, match=r"page.jpg: it is an HTML page, not an image"):
        load_dataset(_cfg(path))
    ds = load_dataset(_cfg(path), ("train", "val"))  # training never reads the test split: nothing to stop for
    assert [r.path.name for r in ds.split("train")] == ["good.jpg", "bad.jpg"]
    with pytest.warns(UserWarning, match="page.jpg"):
        assert len(load_dataset(_cfg(path, on_bad_image="skip")).records) == 2


@pytest.mark.parametrize("workers", [0, 1])
def test_an_image_that_fails_when_read_is_skipped_or_stops_with_one_line(tmp_path, workers):
    from torch.utils.data import DataLoader

    from captionlab.data.dataset import ImageItems, collate_images
    from captionlab.data.images import build_transform

    path = _good_and_truncated(tmp_path)
    records = load_dataset(_cfg(path), ("train",)).split("train")

    def batches(policy):
        items = ImageItems(records, build_transform(32), policy)
        return list(DataLoader(items, batch_size=2, num_workers=workers, collate_fn=collate_images))

    with pytest.raises(BadImageError) as e:
        batches("error")
    line = str(e.value)
    assert "\n" not in line and "Traceback" not in line and "bad.jpg" in line and "on_bad_image=skip" in line
    with warnings.catch_warnings(record=True):  # the warning is the worker's where workers > 0
        warnings.simplefilter("always")
        ((images, idx),) = batches("skip")
    assert images.shape == (1, 3, 32, 32) and idx.tolist() == [0]  # bad.jpg left out of its batch


@pytest.mark.parametrize("mode", ["CMYK", "L", "P", "RGBA", "LA", "I;16"])
def test_images_of_any_mode_load_as_rgb(tmp_path, mode):
    ext = "jpg" if mode in ("CMYK", "L") else "png"
    path = _rgb(tmp_path / f"img.{ext}", mode=mode)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (40, 30)


def test_cmyk_photograph_loads_with_its_colours(tmp_path):
    from skimage import data as skdata

    photo = Image.fromarray(skdata.astronaut())
    photo.convert("CMYK").save(tmp_path / "astronaut_cmyk.jpg", quality=95)
    img = load_image(tmp_path / "astronaut_cmyk.jpg")
    assert img.mode == "RGB" and img.size == photo.size
    diff = np.abs(np.asarray(img, dtype=int) - np.asarray(photo, dtype=int)).mean()
    assert diff < 12  # same picture, not inverted channels


def test_transparent_pixels_become_white(tmp_path):
    Image.new("RGBA", (4, 4), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    assert load_image(tmp_path / "clear.png").getpixel((0, 0)) == (255, 255, 255)


# ---------------------------------------------------------------- deepfashion and folder adapters
def _fashion(tmp: Path, n: int = 20) -> Path:
    (tmp / "images").mkdir()
    caps = {}
    for i in range(n):
        _rgb(tmp / "images" / f"MEN-{i:03d}.jpg")
        caps[f"MEN-{i:03d}.jpg"] = f"The man wears a shirt number {i}. It has long sleeves."
    (tmp / "captions.json").write_text(json.dumps(caps))
    return tmp / "captions.json"


def test_deepfashion_seeded_80_20_split_is_deterministic(tmp_path):
    path = _fashion(tmp_path)
    a = load_dataset(_cfg(path, format="deepfashion", val_fraction=0.125))
    b = load_dataset(_cfg(path, format="deepfashion", val_fraction=0.125))
    c = load_dataset(_cfg(path, format="deepfashion", val_fraction=0.125, split_seed=1))
    assert a.splits() == {"train": 14, "val": 2, "test": 4}
    assert [r.path.name for r in a.split("test")] == [r.path.name for r in b.split("test")]
    assert [r.path.name for r in a.split("test")] != [r.path.name for r in c.split("test")]


def test_deepfashion_given_train_and_test_files(tmp_path):
    path = _fashion(tmp_path, 6)
    caps = json.loads(path.read_text())
    names = sorted(caps)
    (tmp_path / "train_captions.json").write_text(json.dumps({n: caps[n] for n in names[:4]}))
    (tmp_path / "test_captions.json").write_text(json.dumps({n: caps[n] for n in names[4:]}))
    ds = load_dataset(_cfg(tmp_path, format="deepfashion", val_fraction=0.25))
    assert {r.path.name for r in ds.split("test")} == set(names[4:])
    assert ds.splits()["val"] == 1


def test_deepfashion_keeps_the_views_of_one_outfit_in_one_split(tmp_path):
    """It split by file, so a test outfit's front view could be trained on through its side view."""
    (tmp_path / "images").mkdir()
    caps = {}
    for item in range(12):
        for view in ("1_front", "2_side", "3_back", "7_additional"):
            name = f"MEN-Denim-id_{item:08d}-01_{view}.jpg"
            _rgb(tmp_path / "images" / name)
            caps[name] = f"The man wears denim number {item}."
    (tmp_path / "captions.json").write_text(json.dumps(caps))
    ds = load_dataset(_cfg(tmp_path / "captions.json", format="deepfashion", val_fraction=0.25, test_fraction=0.25))
    outfit = {}
    for r in ds.records:
        outfit.setdefault(r.path.name.split("_")[1], set()).add(r.split)
    assert len(outfit) == 12 and all(len(splits) == 1 for splits in outfit.values())
    assert ds.splits() == {"train": 28, "val": 8, "test": 12}  # 7 / 2 / 3 outfits of 4 views


def test_deepfashion_empty_caption_names_the_entry(tmp_path):
    path = _fashion(tmp_path, 3)
    caps = json.loads(path.read_text())
    caps["MEN-001.jpg"] = ""
    path.write_text(json.dumps(caps))
    with pytest.raises(ValueError, match="entry 'MEN-001.jpg': empty caption"):
        load_dataset(_cfg(path, format="deepfashion"))


def test_folder_adapter_lists_images_without_captions(tmp_path):
    (tmp_path / "sub").mkdir()
    _rgb(tmp_path / "b.png")
    _rgb(tmp_path / "sub" / "a.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    ds = load_dataset(_cfg(tmp_path, format="folder"))
    assert [r.path.name for r in ds.records] == ["b.png", "a.jpg"]
    assert all(r.split == "all" and r.captions == [] for r in ds.records)


def test_unknown_format_lists_the_known_ones(tmp_path):
    with pytest.raises(KeyError, match="known: deepfashion, folder, karpathy, synthetic"):
        load_dataset(_cfg(tmp_path, format="coco_raw"))


def test_caption_groups_draw_the_same_captions_for_the_same_epoch(tmp_path):
    path = _karpathy(tmp_path, [_entry("a.png", "train", [f"cap {w}" for w in "abcdefg"], 0)])
    _rgb(tmp_path / "imgs" / "a.png")
    ds = load_dataset(_cfg(path))
    tok = build_tokenizer("en_word")
    vocab = Vocabulary.build(tok.tokenize(c) for c in ds.records[0].captions)
    groups = CaptionGroups(ds.records, vocab, tok, lambda im: im, 10, seq_per_img=3, seed=0)
    first = groups.pick(0)
    assert groups.pick(0) == first and len(first) == 3
    picks = []
    for epoch in range(10):
        groups.set_epoch(epoch)
        picks.append(groups.pick(0))
    assert picks[0] == first and any(p != first for p in picks[1:])  # epochs draw different captions
    image, caps, index = groups[0]
    assert index == 0 and len(caps) == 3  # items carry their record index, for losses that need references
    few = CaptionGroups(ds.records, vocab, tok, lambda im: im, 10, seq_per_img=9, seed=0)
    assert len(few.pick(0)) == 9  # fewer captions than asked: some repeat


def test_carve_test_moves_a_seeded_sample_of_train_and_refuses_data_with_a_test_split(tmp_path):
    entries = [_entry(f"{i}.png", "train" if i < 8 else "val", [f"caption {i}"], i) for i in range(10)]
    path = _karpathy(tmp_path, entries)
    for i in range(10):
        _rgb(tmp_path / "imgs" / f"{i}.png")
    one = load_dataset(_cfg(path, carve_test=3, split_seed=1))
    assert one.splits() == {"train": 5, "test": 3, "val": 2}
    assert [r.image_id for r in one.split("test")] == [
        r.image_id for r in load_dataset(_cfg(path, carve_test=3, split_seed=1)).split("test")
    ]
    other = load_dataset(_cfg(path, carve_test=3, split_seed=2))
    assert {r.image_id for r in other.split("test")} != {r.image_id for r in one.split("test")}
    with pytest.raises(InputError, match="only 8 training images"):
        load_dataset(_cfg(path, carve_test=8))
    (tmp_path / "t").mkdir()
    with_test = _karpathy(tmp_path / "t", [_entry("0.png", "test", ["a"], 0), _entry("1.png", "train", ["b"], 1)])
    with pytest.raises(InputError, match="has a test split already"):
        load_dataset(_cfg(with_test, carve_test=1, image_root=str(tmp_path)))


def test_the_feature_cache_draws_each_epochs_captions_as_training_from_images_does():
    """7 captions an image, 2 an item: the picks change across epochs, the same with and without the cache."""
    from captionlab.training.feature_cache import CachedGroups

    records = [ImageRecord(i, Path(f"{i}.png"), "train", [f"w{i} c{j}" for j in range(7)]) for i in range(3)]
    tok = build_tokenizer("en_word")
    vocab = Vocabulary.build(tok.tokenize(c) for r in records for c in r.captions)
    groups = CaptionGroups(records, vocab, tok, None, 10, seq_per_img=2, seed=0)
    cached = CachedGroups(groups, np.zeros((3, 4), np.float16))
    seen = []
    for epoch in range(3):
        groups.set_epoch(epoch)  # what the trainer does, on the groups it built
        picks = [[c.tolist() for c in cached[i][1]] for i in range(3)]
        assert picks == [groups.pick(i) for i in range(3)]
        seen.append(picks)
    assert seen[0] != seen[1] or seen[1] != seen[2]


def test_an_unreadable_upload_is_named_and_said_what_it_is(tmp_path):
    """serve said "cannot identify image file <_io.BytesIO object at 0x7fcf...>" for a web page
    uploaded as photo.jpg; a file on disk says the same as an upload."""
    from captionlab.data.images import BadImageError, decode_image, load_image

    page = b"<!DOCTYPE html>\n<html><body>Sign in to see this photo</body></html>"
    for data, kind in ((page, "an HTML page"), (b"%PDF-1.7 ...", "a PDF document"), (b"hello there", "text")):
        with pytest.raises(BadImageError) as e:
            decode_image(data, "photo.jpg")
        assert str(e.value) == f"cannot read image photo.jpg: it is {kind}, not an image"
    (tmp_path / "photo.jpg").write_bytes(page)
    with pytest.raises(BadImageError, match=r"photo.jpg: it is an HTML page, not an image$"):
        load_image(tmp_path / "photo.jpg")
