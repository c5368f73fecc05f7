"""Grounding rate on the synthetic set: does the model look at the object it names?

For every generated word that is a colour or a shape of some object in the scene, take the peak of
that step's attention grid and ask whether the peak region's centre lies inside the box of an
object with that colour or shape. The chance rate for the same words is the share of region centres
inside those boxes: what a peak placed at random would score. Words naming nothing in the scene are
attribute errors (see attributes.py), not grounding failures, and are left out.

Synthetic images are square, so the model's resized, centre-cropped input covers the whole image
and region (r, c) of a g x g grid is centred at ((c + 0.5) / g, (r + 0.5) / g) of the image side.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from ..data.dataset import ImageRecord
from ..data.synthetic import COLOURS
from .attributes import _PLURALS, _SHAPE_WORDS


def _matching_boxes(word: str, record: ImageRecord) -> list[list[float]]:
    shape = _SHAPE_WORDS.get(word) or _PLURALS.get(word)
    boxes = []
    for o in record.objects:
        size, colour, obj_shape = o["name"].split()
        if (word in COLOURS and colour == word) or (shape is not None and obj_shape == shape):
            boxes.append(o["bbox"])
    return boxes


def _inside(points: np.ndarray, boxes: list[list[float]]) -> np.ndarray:
    """points (P, 2) as (x, y) -> (P,) inside any [x, y, w, h] box."""
    hit = np.zeros(len(points), dtype=bool)
    for x, y, w, h in boxes:
        hit |= (points[:, 0] >= x) & (points[:, 0] <= x + w) & (points[:, 1] >= y) & (points[:, 1] <= y + h)
    return hit


def grounding_rate(traces: dict[Any, Any], records: Sequence[ImageRecord]) -> dict[str, float]:
    """``traces``: image id -> CaptionTrace (words, attention (words, grid, grid)). Returns the
    grounding rate, the chance rate, and how many words were judged (rates are None when no
    generated word names an object of its scene)."""
    by_id = {r.image_id: r for r in records}
    hits, chance, n = 0, 0.0, 0
    side = None
    for image_id, trace in traces.items():
        record = by_id[image_id]
        if side is None:
            with Image.open(record.path) as im:
                side = im.size[0]
        grid = trace.attention.shape[-1]
        centres = (
            (np.stack(np.meshgrid(np.arange(grid), np.arange(grid), indexing="xy"), -1).reshape(-1, 2) + 0.5)
            * side
            / grid
        )  # (regions, 2) as (x, y), row-major like the flattened grid
        for t, word in enumerate(trace.words):
            boxes = _matching_boxes(word, record)
            if not boxes:
                continue
            peak = int(np.asarray(trace.attention[t]).reshape(-1).argmax())
            hits += bool(_inside(centres[peak : peak + 1], boxes)[0])
            chance += float(_inside(centres, boxes).mean())
            n += 1
    if n == 0:  # an untrained model may name nothing that is there
        return {"grounding_rate": None, "chance_rate": None, "words": 0}
    return {"grounding_rate": hits / n, "chance_rate": chance / n, "words": n}
