"""Readers that turn dataset files on disk into one ``CaptionDataset``; chosen by ``data.format``."""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from ..config import DataConfig
from ..errors import InputError, MissingError
from ..files import read_json
from ..paths import resolve
from ..registry import Registry
from .dataset import CaptionDataset, ImageRecord, check_images
from .images import IMAGE_EXTS

ADAPTERS: Registry[Callable[[DataConfig], CaptionDataset]] = Registry("dataset format")
KARPATHY_SPLITS = ("train", "restval", "val", "test", "all")


def load_dataset(cfg: DataConfig, splits: Sequence[str] | None = None) -> CaptionDataset:
    """The data ``cfg`` names, its images checked from their headers: those of ``splits`` only where
    given (training: train and val; ``evaluate --split test``: test), so a start never pays for the rest."""
    ds = ADAPTERS.get(cfg.format)(cfg)
    if cfg.carve_test:  # before the check: which photos are carved never depends on which could be read
        ds.records = carve_test(ds.records, cfg.carve_test, cfg.split_seed, ds.source)
    ds.records = check_images(ds.records, cfg.on_bad_image, ds.source, splits)
    ds.on_bad_image = cfg.on_bad_image
    if not ds.records:
        raise InputError(f"{ds.source}: no usable images")
    return ds


def carve_test(records: list[ImageRecord], n: int, seed: int, source: Path) -> list[ImageRecord]:
    """``n`` training images, drawn with ``seed``, become the test split (``data.carve_test``): a split
    that never chooses a checkpoint, for data that ships only train and val (the Flickr8k subset)."""
    if any(r.split == "test" for r in records):
        raise InputError(f"{source} has a test split already: data.carve_test is for data without one")
    train = [i for i, r in enumerate(records) if r.split == "train"]
    if n >= len(train):
        raise InputError(f"data.carve_test={n} but {source} has only {len(train)} training images")
    chosen = set(random.Random(seed).sample(train, n))
    return [dataclasses.replace(r, split="test") if i in chosen else r for i, r in enumerate(records)]


def _caption(text: Any, where: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{where}: empty caption")
    return text.strip()


@ADAPTERS.register("karpathy")
def load_karpathy(cfg: DataConfig) -> CaptionDataset:
    """Karpathy split JSON (dataset_coco.json, dataset_flickr8k.json, ...); 'restval' counts as train."""
    path = resolve(cfg.path)
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise InputError(f"{path}: expected an object with an 'images' list (Karpathy split format)")
    root = resolve(cfg.image_root) if cfg.image_root else path.parent
    records = []
    for i, img in enumerate(data["images"]):
        where = f"{path}: images[{i}]"
        if not isinstance(img, dict) or "filename" not in img or "sentences" not in img:
            raise InputError(f"{where}: needs 'filename' and 'sentences'")
        if not isinstance(img["filename"], str) or not isinstance(img["sentences"], list):
            raise InputError(f"{where}: 'filename' must be a string and 'sentences' a list")
        if not isinstance(img.get("filepath", ""), str):
            raise InputError(f"{where}: 'filepath' must be a string")
        where += f" ({img['filename']})"
        split = img.get("split", "train")
        if split not in KARPATHY_SPLITS:
            raise InputError(f"{where}: unknown split {split!r}; expected one of {', '.join(KARPATHY_SPLITS)}")
        split = "train" if split == "restval" else split
        caps = []
        for j, s in enumerate(img["sentences"]):
            text = s.get("raw") if isinstance(s, dict) else None
            tokens = s.get("tokens") if isinstance(s, dict) else None
            if (not isinstance(text, str) or not text.strip()) and isinstance(tokens, list):
                text = " ".join(str(t) for t in tokens)
            caps.append(_caption(text, f"{where} sentences[{j}]"))
        if not caps and split != "all":
            raise InputError(f"{where}: no sentences")
        image_id = img.get("cocoid", img.get("imgid", i))
        if isinstance(image_id, bool) or not isinstance(image_id, (int, str)) or not str(image_id).isdigit():
            raise InputError(f"{where}: image id {image_id!r} is not a whole number")
        objects = img.get("objects", [])
        if not isinstance(objects, list):
            raise InputError(f"{where}: 'objects' must be a list")
        records.append(
            ImageRecord(int(image_id), root / img.get("filepath", "") / img["filename"], split, caps, objects)
        )
    return CaptionDataset(str(data.get("dataset", path.stem)), records, path)


@ADAPTERS.register("synthetic")
def load_synthetic(cfg: DataConfig) -> CaptionDataset:
    """The embedded default: generated into ``path`` on first use (deterministic), then read as Karpathy JSON."""
    from . import synthetic

    ann = synthetic.ensure(
        resolve(cfg.path), cfg.synthetic_n, cfg.synthetic_seed, cfg.synthetic_size, cfg.synthetic_lang
    )
    return load_karpathy(dataclasses.replace(cfg, format="karpathy", path=str(ann), image_root=None))


# A DeepFashion-MultiModal file name is an outfit and a view of it: MEN-Denim-id_00000080-01_7_additional.jpg
FASHION_VIEW = re.compile(r"(.+)_\d+_[A-Za-z]+\.\w+$")


def fashion_item(name: str) -> str:
    """The outfit a DeepFashion image shows (its views share it), or the name where it does not parse."""
    m = FASHION_VIEW.match(name)
    return m.group(1) if m else name


def seeded_split(
    names: Sequence[str],
    test_fraction: float,
    val_fraction: float,
    seed: int,
    group: Callable[[str], str] = lambda n: n,
    test: Collection[str] = (),
) -> dict[str, str]:
    """name -> train / val / test, the same for the same seed: ``test_fraction`` of the groups to test
    (unless ``test`` names the test split), then ``val_fraction`` of the rest to val. Names that share a
    group (views of one outfit) land in one split, so no photo of a test item is trained on."""
    groups = sorted({group(n) for n in names if n not in test})
    random.Random(seed).shuffle(groups)
    n_test = 0 if test else round(len(groups) * test_fraction)
    n_val = round((len(groups) - n_test) * val_fraction)
    where = {g: "test" if i < n_test else "val" if i < n_test + n_val else "train" for i, g in enumerate(groups)}
    return {n: "test" if n in test else where[group(n)] for n in names}


@ADAPTERS.register("deepfashion")
def load_deepfashion(cfg: DataConfig) -> CaptionDataset:
    """DeepFashion-MultiModal: ``captions.json`` (image file -> caption), split by outfit (``fashion_item``)
    with a seeded ``test_fraction`` then ``val_fraction`` (``seeded_split``); or the ``train_captions.json``
    / ``test_captions.json`` pair used by the course projects, val then taken from train the same way."""
    path = resolve(cfg.path)
    folder = path if path.is_dir() else path.parent
    root = resolve(cfg.image_root) if cfg.image_root else folder / "images"
    given = [folder / "train_captions.json", folder / "test_captions.json"]
    test: dict[str, str] = {}
    if path.is_dir() and all(p.is_file() for p in given):
        captions, test = _fashion_captions(given[0]), _fashion_captions(given[1])
        captions.update(test)
    else:
        captions = _fashion_captions(path / "captions.json" if path.is_dir() else path)
    split = seeded_split(list(captions), cfg.test_fraction, cfg.val_fraction, cfg.split_seed, fashion_item, test)
    records = [ImageRecord(i, root / name, split[name], [captions[name]]) for i, name in enumerate(sorted(captions))]
    return CaptionDataset("deepfashion", records, path)


def _fashion_captions(path: Path) -> dict[str, str]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected an object mapping image file name -> caption")
    return {name: _caption(text, f"{path}: entry {name!r}") for name, text in data.items()}


@ADAPTERS.register("tsv")
def load_tsv(cfg: DataConfig) -> CaptionDataset:
    """S4's format: ``image_id<TAB>caption`` per line, several lines per image (a header line
    ``image_id<TAB>caption`` is skipped), images in ``image_root`` (default: an ``images`` folder beside
    the file, else the file's folder) named ``image_id`` or ``image_id`` + a usual extension. Images
    are split like deepfashion's: seeded ``test_fraction``, then ``val_fraction`` of the rest."""
    path = resolve(cfg.path)
    if not path.is_file():
        raise MissingError(f"annotation file not found: {path}")
    root = (
        resolve(cfg.image_root)
        if cfg.image_root
        else (path.parent / "images" if (path.parent / "images").is_dir() else path.parent)
    )
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise InputError(f"{path} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    captions: dict[str, list[str]] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip() or (n == 1 and line.lower().startswith("image_id\t")):
            continue
        if "\t" not in line:
            raise InputError(f"{path}: line {n}: expected image_id<TAB>caption, got {line[:60]!r}")
        image_id, text = line.split("\t", 1)
        captions.setdefault(image_id.strip(), []).append(_caption(text, f"{path}: line {n} ({image_id.strip()})"))
    if not captions:
        raise InputError(f"{path}: no image_id<TAB>caption lines")
    split = seeded_split(list(captions), cfg.test_fraction, cfg.val_fraction, cfg.split_seed)
    records = [
        ImageRecord(i, _image_file(root, name), split[name], captions[name]) for i, name in enumerate(sorted(captions))
    ]
    return CaptionDataset(path.stem, records, path)


def _image_file(root: Path, image_id: str) -> Path:
    """``root/image_id`` if it exists, else the first ``root/image_id.<ext>`` that does."""
    direct = root / image_id
    if direct.suffix.lower() in IMAGE_EXTS or direct.is_file():
        return direct
    for ext in sorted(IMAGE_EXTS):
        if (root / f"{image_id}{ext}").is_file():
            return root / f"{image_id}{ext}"
    return direct  # reported as missing by check_images, with the on_bad_image policy


@ADAPTERS.register("folder")
def load_folder(cfg: DataConfig) -> CaptionDataset:
    """Every image under a folder (recursively), without captions: for captioning and rebuilds."""
    root = resolve(cfg.path)
    if not root.is_dir():
        raise MissingError(f"image folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    if not files:
        raise InputError(f"{root}: no image files ({', '.join(sorted(IMAGE_EXTS))})")
    return CaptionDataset(root.name, [ImageRecord(i, p, "all", []) for i, p in enumerate(files)], root)
