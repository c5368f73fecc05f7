"""Chinese captions for the synthetic scenes (``captionlab synth --lang zh``): the same objects,
sizes and positions as the English templates, written as a Chinese annotator would."""

from __future__ import annotations

import random
from typing import Protocol


class _Object(Protocol):
    shape: str
    colour: str
    size: str
    row: int
    col: int


COLOURS = {
    "red": "红色",
    "green": "绿色",
    "blue": "蓝色",
    "yellow": "黄色",
    "purple": "紫色",
    "orange": "橙色",
    "black": "黑色",
}
SHAPES = {
    "circle": ["圆形", "圆盘"],
    "square": ["正方形", "方块"],
    "triangle": ["三角形"],
    "diamond": ["菱形"],
    "star": ["星形", "五角星"],
}
SIZES = {"small": ["小", "较小"], "large": ["大", "较大"]}
POSITIONS = {  # (row, col) -> ways to say where
    (0, 0): ["左上角"],
    (0, 1): ["上方", "正上方"],
    (0, 2): ["右上角"],
    (1, 0): ["左侧", "左边"],
    (1, 1): ["中间", "中央"],
    (1, 2): ["右侧", "右边"],
    (2, 0): ["左下角"],
    (2, 1): ["下方", "正下方"],
    (2, 2): ["右下角"],
}
NUMBERS = {2: "两", 3: "三"}


def _np(o: _Object, rng: random.Random, size: bool = True) -> str:
    """一个大的红色圆形 / 一个红色的方块"""
    shape = rng.choice(SHAPES[o.shape])
    if size:
        return f"一个{rng.choice(SIZES[o.size])}的{COLOURS[o.colour]}{shape}"
    return f"一个{COLOURS[o.colour]}的{shape}"


def _pos(o: _Object, rng: random.Random) -> str:
    return rng.choice(POSITIONS[(o.row, o.col)])


def captions_zh(objs: list[_Object], rng: random.Random, n: int = 5) -> list[str]:
    """``n`` distinct Chinese captions; objects named left to right, as in English."""
    objs = sorted(objs, key=lambda o: (o.col, o.row))
    if len(objs) == 1:
        o = objs[0]
        cands = [
            f"图片{_pos(o, rng)}有{_np(o, rng)}",
            f"{_np(o, rng)}位于画面{_pos(o, rng)}",
            f"{_pos(o, rng)}是{_np(o, rng, size=False)}",
            f"画面{_pos(o, rng)}画着{_np(o, rng)}",
            f"只有一个{COLOURS[o.colour]}的{rng.choice(SHAPES[o.shape])}在{_pos(o, rng)}",
        ]
    else:
        k = len(objs)
        nps = [_np(o, rng) for o in objs]
        listed = "和".join(nps) if k == 2 else f"{nps[0]}、{nps[1]}和{nps[2]}"
        cands = [
            listed,
            f"图中有{NUMBERS[k]}个形状：{listed}",
            "，".join(f"{_pos(o, rng)}有{_np(o, rng)}" for o in objs[:2]),
        ]
        a, b = objs[0], objs[1]
        if a.col < b.col:
            cands.append(f"{_np(a, rng)}在{_np(b, rng)}的左边")
        elif a.row < b.row:
            cands.append(f"{_np(a, rng)}在{_np(b, rng)}的上方")
        if len({(o.colour, o.shape) for o in objs}) == 1:
            many = f"{NUMBERS[k]}个{COLOURS[objs[0].colour]}的{rng.choice(SHAPES[objs[0].shape])}"
            cands[:0] = [many, f"图中有{many}"]
        cands.append(f"{NUMBERS[k]}个物体：{listed}")
    out: list[str] = []
    for c in cands:
        if c not in out:
            out.append(c)
    return out[:n]
