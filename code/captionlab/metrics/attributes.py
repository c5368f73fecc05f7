"""What the model sees: per-attribute accuracy of generated captions on the synthetic set.

BLEU and CIDEr reward the template as much as the content; here each caption is parsed for the
scene's attributes and checked against the truth the synthesiser stored (object names and boxes):

- colour, shape, size, position: of the values a caption states, the share that are true of some
  object in the scene (each object can vouch for one mention per caption, so "two red circles"
  for one red circle is one right, one wrong);
- count: the number of objects the caption implies ("two ...", "a single ...", or the number of
  objects it names) equals the scene's;
- overall: the mean of the five.

That is precision: a caption that states less is not marked down. ``recall`` sits beside it: of the
scene's objects' colours, shapes, sizes and positions, the share the caption states rightly.

``blind_floor`` scores the same captions against other images' scenes (a fixed derangement): what
a captioner that ignores the image would get with the same caption distribution.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from ..data.dataset import ImageRecord
from ..data.synthetic import COLOURS, COLS, NUMBERS, ROWS, SHAPES, SIZES
from ..errors import InputError

ATTRIBUTES = ("colour", "shape", "size", "position", "count")
_SHAPE_WORDS = {w: s for s, words in SHAPES.items() for w in words}
_PLURALS = {w + ("es" if w.endswith("x") else "s"): s for w, s in _SHAPE_WORDS.items()}
_SIZE_WORDS = {w: s for s, words in SIZES.items() for w in words}
_NUMBER_WORDS = {v: k for k, v in NUMBERS.items()} | {"single": 1}

Scene = list[dict[str, Any]]  # [{"colour", "shape", "size", "position": (row, col)}]


def scene_of(record: ImageRecord, image_size: int | None = None) -> Scene:
    """The truth for one synthetic image, from its stored object names and boxes."""
    if image_size is None:
        with Image.open(record.path) as im:
            image_size = im.size[0]
    cell = image_size / 3
    scene = []
    for o in record.objects:
        size, colour, shape = o["name"].split()
        x, y, w, h = o["bbox"]
        row = min(2, max(0, int((y + h / 2) // cell)))
        col = min(2, max(0, int((x + w / 2) // cell)))
        scene.append({"colour": colour, "shape": shape, "size": size, "position": (row, col)})
    return scene


def parse_caption(caption: str) -> dict[str, Any]:
    """Attribute mentions in a caption: lists of stated colours, shapes, sizes, positions, and its count."""
    words = caption.lower().replace(",", " ").replace(":", " ").split()
    colours, shapes, sizes, positions = [], [], [], []
    n_objects, stated_count = 0, None
    for i, w in enumerate(words):
        if w in _NUMBER_WORDS and stated_count is None:
            stated_count = _NUMBER_WORDS[w]
        shape, many = (_SHAPE_WORDS.get(w), 1) if w in _SHAPE_WORDS else (_PLURALS.get(w), None)
        if shape is None:
            continue
        j, colour, size = i - 1, None, None  # adjectives right before the shape word
        while j >= 0 and (words[j] in COLOURS or words[j] in _SIZE_WORDS):
            colour = colour or (words[j] if words[j] in COLOURS else None)
            size = size or (_SIZE_WORDS.get(words[j]))
            j -= 1
        if many is None:  # "two yellow stars": the number word before the adjectives
            many = _NUMBER_WORDS.get(words[j], 2) if j >= 0 else 2
        n_objects += many
        shapes += [shape] * many
        colours += [colour] * many if colour else []
        sizes += [size] * many if size else []
    positions = _positions(words)
    return {
        "colour": colours,
        "shape": shapes,
        "size": sizes,
        "position": positions,
        "count": stated_count if stated_count is not None else n_objects,
    }


def _positions(words: list[str]) -> list[tuple[int, int]]:
    """'top left (corner)', 'at the top', 'on the left (side)', 'in the centre/middle' -> (row, col);
    'to the left of' is a relation between objects, not a position."""
    out = []
    i = 0
    while i < len(words):
        w = words[i]
        nxt = words[i + 1] if i + 1 < len(words) else ""
        relation = i >= 1 and words[i - 1] == "the" and i >= 2 and words[i - 2] == "to" and nxt == "of"
        if w in ("top", "bottom"):
            if nxt in ("left", "right"):
                out.append((ROWS.index(w), COLS.index(nxt)))
                i += 2
                continue
            out.append((ROWS.index(w), 1))
        elif w in ("left", "right") and not relation:
            out.append((1, COLS.index(w)))
        elif w in ("centre", "middle"):
            out.append((1, 1))
        i += 1
    return out


def _right(mentions: Sequence[Any], truth: Sequence[Any]) -> int:
    return sum((Counter(mentions) & Counter(truth)).values())


def score_attributes(captions: Sequence[str], scenes: Sequence[Scene]) -> tuple[dict[str, float], dict[str, float]]:
    """(accuracy, recall). Accuracy is precision: of the values the captions state, the share that are
    true, so a caption that says less is not punished; recall: of the scenes' objects' colours, shapes,
    sizes and positions, the share the captions state rightly (count: right or wrong, as in accuracy)."""
    right = dict.fromkeys(ATTRIBUTES, 0)
    said = dict.fromkeys(ATTRIBUTES, 0)
    there = dict.fromkeys(ATTRIBUTES, 0)
    for cap, scene in zip(captions, scenes):
        m = parse_caption(cap)
        for a in ATTRIBUTES[:4]:
            right[a] += _right(m[a], [o[a] for o in scene])
            said[a] += len(m[a])
            there[a] += len(scene)
        right["count"] += int(m["count"] == len(scene))
        said["count"] += 1
        there["count"] += 1
    acc = {a: right[a] / said[a] if said[a] else 0.0 for a in ATTRIBUTES}
    rec = {a: right[a] / there[a] if there[a] else 0.0 for a in ATTRIBUTES}
    for d in (acc, rec):
        d["overall"] = sum(d[a] for a in ATTRIBUTES) / len(ATTRIBUTES)
    return acc, rec


def attribute_accuracy(captions: Mapping[int, str], records: Sequence[ImageRecord], seed: int = 0) -> dict[str, Any]:
    """Per-attribute accuracy of ``captions`` (image id -> caption) on synthetic ``records``, with the
    blind floor and how often each attribute is mentioned per caption."""
    recs = [r for r in records if r.image_id in captions and r.objects]
    if not recs:
        raise InputError("attribute accuracy needs synthetic records with stored objects")
    with Image.open(recs[0].path) as im:
        size = im.size[0]
    scenes = [scene_of(r, size) for r in recs]
    caps = [captions[r.image_id] for r in recs]
    order = list(range(len(recs)))
    random.Random(seed).shuffle(order)
    shifted = order[1:] + order[:1]  # a derangement: no image keeps its own scene
    other = [None] * len(recs)
    for a, b in zip(order, shifted):
        other[a] = scenes[b]
    parsed = [parse_caption(c) for c in caps]
    mentions = {a: sum(len(p[a]) for p in parsed) / len(parsed) for a in ATTRIBUTES[:4]}
    accuracy, recall = score_attributes(caps, scenes)
    return {
        "images": len(recs),
        "accuracy": accuracy,
        "recall": recall,
        "blind_floor": score_attributes(caps, other)[0] if len(recs) > 1 else None,
        "mentions_per_caption": mentions,
    }


def mistakes(caption: str, record: ImageRecord, image_size: int | None = None) -> dict[str, Any]:
    """What one caption gets wrong about its synthetic scene, for the evaluation report: the words that
    state a colour, shape or size no object of the scene (left unclaimed) has, and the wrong count."""
    scene = scene_of(record, image_size)
    parsed = parse_caption(caption)
    words: list[str] = []
    for attr, lookup in (
        ("colour", {c: c for c in COLOURS}),
        ("shape", _SHAPE_WORDS | _PLURALS),
        ("size", _SIZE_WORDS),
    ):
        extra = Counter(parsed[attr]) - Counter(o[attr] for o in scene)  # mentions no object vouches for
        words += [w for w in dict.fromkeys(caption.lower().split()) if lookup.get(w) in extra]
    count = None if parsed["count"] == len(scene) else {"said": parsed["count"], "true": len(scene)}
    return {"words": words, "count": count}


def is_synthetic(records: Sequence[ImageRecord]) -> bool:
    """Records whose objects carry the synthesiser's 'size colour shape' names."""
    return bool(records) and all(
        r.objects and all(len(o.get("name", "").split()) == 3 and "bbox" in o for o in r.objects) for r in records
    )
