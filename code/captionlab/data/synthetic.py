"""The embedded default dataset: deterministic scenes of coloured shapes with human-like captions.

Colours, shapes, sizes, counts and positions are visible only in the image, so a captioner that
ignores the image can learn the templates but not the words that matter; the gap between a seeing
and a blind model shows that the whole pipeline works. Every mentioned object's box is stored in the
JSON ("objects": [{"name", "bbox": [x, y, w, h]}]) for attention checks.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..errors import InputError
from ..files import atomic_write_text
from ..progress import progress
from .synthetic_zh import captions_zh
from .tokenizers import ChineseCharTokenizer, EnglishWordTokenizer

_TOKENIZERS = {"en": EnglishWordTokenizer(), "zh": ChineseCharTokenizer()}

COLOURS = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (45, 75, 215),
    "yellow": (235, 205, 35),
    "purple": (135, 55, 175),
    "orange": (245, 135, 25),
    "black": (25, 25, 25),
}
SHAPES = {
    "circle": ["circle", "disc"],
    "square": ["square", "box"],
    "triangle": ["triangle"],
    "diamond": ["diamond"],
    "star": ["star"],
}
SIZES = {"small": ["small", "little"], "large": ["large", "big"]}
ROWS = ("top", "middle", "bottom")
COLS = ("left", "centre", "right")
BACKGROUNDS = [(236, 236, 236), (242, 232, 212), (222, 234, 242), (230, 242, 226)]
NUMBERS = {2: "two", 3: "three"}
VERSION = 1  # bump when rendering or captions change, so `ensure` regenerates old copies


@dataclass
class SceneObject:
    shape: str
    colour: str
    size: str
    row: int
    col: int
    bbox: tuple[int, int, int, int]  # x, y, w, h in pixels


def _position(o: SceneObject, rng: random.Random) -> str:
    r, c = ROWS[o.row], COLS[o.col]
    if (r, c) == ("middle", "centre"):
        return rng.choice(["in the centre", "in the middle"])
    if r == "middle":
        return rng.choice([f"on the {c}", f"on the {c} side"])
    if c == "centre":
        return f"at the {r}"
    return rng.choice([f"in the {r} {c} corner", f"at the {r} {c}"])


def _np(o: SceneObject, rng: random.Random, size: bool = True) -> str:
    words = ["a"] + ([rng.choice(SIZES[o.size])] if size else []) + [o.colour, rng.choice(SHAPES[o.shape])]
    return " ".join(words)


def _plural(shape: str) -> str:
    return shape + ("es" if shape.endswith("x") else "s")


def captions_for(objs: list[SceneObject], rng: random.Random, n: int = 5) -> list[str]:
    """``n`` distinct captions from several templates; objects are named left to right."""
    objs = sorted(objs, key=lambda o: (o.col, o.row))
    cands: list[str] = []
    if len(objs) == 1:
        o = objs[0]
        pos = _position(o, rng)
        cands = [
            f"{_np(o, rng)} {pos}",
            f"there is {_np(o, rng, size=False)} {pos}",
            f"{pos} there is {_np(o, rng)}",
            f"the picture shows {_np(o, rng)} {_position(o, rng)}",
            f"a single {o.colour} {rng.choice(SHAPES[o.shape])} {_position(o, rng)}",
        ]
    else:
        k = len(objs)
        nps = [_np(o, rng) for o in objs]
        listed = " and ".join(nps) if k == 2 else f"{nps[0]}, {nps[1]} and {nps[2]}"
        cands = [
            listed,
            f"there are {NUMBERS[k]} shapes {listed}",
            "the picture shows " + " and ".join(f"{_np(o, rng)} {_position(o, rng)}" for o in objs[:2]),
        ]
        a, b = objs[0], objs[1]
        if a.col < b.col:
            cands.append(f"{_np(a, rng)} to the left of {_np(b, rng)}")
        elif a.row < b.row:
            cands.append(f"{_np(a, rng)} above {_np(b, rng)}")
        if len({(o.colour, o.shape) for o in objs}) == 1:
            many = f"{NUMBERS[k]} {objs[0].colour} {_plural(rng.choice(SHAPES[objs[0].shape]))}"
            cands[:0] = [many, f"there are {many}"]
        cands.append(f"{NUMBERS[k]} objects: {listed}")
    out: list[str] = []
    for c in cands:
        if c not in out:
            out.append(c)
    return out[:n]


def _draw(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill: tuple) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        s = r * 0.9
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r * 0.8, cy), (cx, cy + r), (cx - r * 0.8, cy)], fill=fill)
    elif shape == "star":
        pts = [
            (
                cx + (r if i % 2 == 0 else r * 0.45) * math.sin(i * math.pi / 5),
                cy - (r if i % 2 == 0 else r * 0.45) * math.cos(i * math.pi / 5),
            )
            for i in range(10)
        ]
        draw.polygon(pts, fill=fill)


def render_scene(rng: random.Random, size: int, max_objects: int = 3) -> tuple[Image.Image, list[SceneObject]]:
    bg = rng.choice(BACKGROUNDS)
    noise = np.random.default_rng(rng.getrandbits(32)).integers(-6, 7, size=(size, size, 1))
    pixels = np.clip(np.array(bg, dtype=np.int16)[None, None, :] + noise, 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(img)
    k = rng.choices([1, 2, 3][:max_objects], weights=[4, 4, 2][:max_objects])[0]
    cells = rng.sample([(r, c) for r in range(3) for c in range(3)], k)
    same = k > 1 and rng.random() < 0.25  # some scenes repeat one object, for counting captions
    first = (rng.choice(list(SHAPES)), rng.choice(list(COLOURS)))
    cell = size / 3
    objs = []
    for row, col in cells:
        shape, colour = first if same else (rng.choice(list(SHAPES)), rng.choice(list(COLOURS)))
        sz = rng.choice(list(SIZES))
        r = cell * (0.42 if sz == "large" else 0.24)
        cx = (col + 0.5) * cell + rng.uniform(-0.06, 0.06) * cell
        cy = (row + 0.5) * cell + rng.uniform(-0.06, 0.06) * cell
        _draw(draw, shape, cx, cy, r, COLOURS[colour])
        box = (int(cx - r), int(cy - r), int(math.ceil(2 * r)), int(math.ceil(2 * r)))
        objs.append(SceneObject(shape, colour, sz, row, col, box))
    return img, objs


def generate(
    out: str | Path,
    n: int = 5000,
    seed: int = 0,
    size: int = 128,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    max_objects: int = 3,
    lang: str = "en",
) -> Path:
    """Write ``images/*.png`` and ``dataset_synthetic.json`` (Karpathy format). Same arguments, same bytes.
    ``lang="zh"``: the same scenes with Chinese captions (``tokens`` are characters)."""
    if lang not in _TOKENIZERS:
        raise InputError(f"synthetic captions come in {', '.join(_TOKENIZERS)}, not {lang!r}")
    if n < 3:
        raise InputError("the synthetic dataset needs n >= 3 (train, val and test each get an image)")
    out = Path(out)
    ann = out / "dataset_synthetic.json"
    ann.unlink(missing_ok=True)  # an interrupted regeneration leaves no annotation over half-new images
    (out / "images").mkdir(parents=True, exist_ok=True)
    n_val = max(1, round(n * val_fraction))
    n_test = max(1, round(n * test_fraction))
    images = []
    for i in progress(range(n), desc="synthesising", unit="img"):
        rng = random.Random(seed * 1_000_003 + i)
        img, objs = render_scene(rng, size, max_objects)
        name = f"synth_{i:06d}.png"
        img.save(out / "images" / name, optimize=False)
        split = "test" if i < n_test else "val" if i < n_test + n_val else "train"
        caps = captions_for(objs, rng) if lang == "en" else captions_zh(objs, rng)
        images.append(
            {
                "filepath": "images",
                "filename": name,
                "imgid": i,
                "split": split,
                "sentences": [
                    {"tokens": _TOKENIZERS[lang].tokenize(c), "raw": c, "imgid": i, "sentid": i * 10 + j}
                    for j, c in enumerate(caps)
                ],
                "objects": [{"name": f"{o.size} {o.colour} {o.shape}", "bbox": list(o.bbox)} for o in objs],
            }
        )
    meta = {
        "generator": "captionlab.synthetic",
        "version": VERSION,
        "n": n,
        "seed": seed,
        "size": size,
        "max_objects": max_objects,
        "lang": lang,
    }
    keep = {im["filename"] for im in images}
    for old in (out / "images").glob("synth_*.png"):  # scenes of an earlier, larger set
        if old.name not in keep:
            old.unlink()
    atomic_write_text(ann, json.dumps({"dataset": "synthetic", "meta": meta, "images": images}, indent=1), "annotation")
    return ann


def ensure(out: str | Path, n: int = 5000, seed: int = 0, size: int = 128, lang: str = "en") -> Path:
    """Generate unless a dataset made with the same arguments is already there."""
    ann = Path(out) / "dataset_synthetic.json"
    if ann.is_file():
        try:
            meta = json.loads(ann.read_text()).get("meta", {})
            have = (meta.get("version"), meta.get("n"), meta.get("seed"), meta.get("size"), meta.get("lang", "en"))
            if have == (VERSION, n, seed, size, lang):
                return ann
        except json.JSONDecodeError:
            pass
    return generate(out, n=n, seed=seed, size=size, lang=lang)
