"""The evaluation report: one self-contained HTML page per evaluation folder, or two evaluations of the
same split side by side.

Why a page: after ``evaluate`` a researcher wants to look (which images went wrong, what the model said,
where it looked, where run B beats run A), not read JSON. The page is one file (inline CSS and JS,
thumbnails embedded as JPEG data), so the folder can be copied or zipped; it needs no network.
Everything it shows comes from the evaluation folder (metrics.json, per_image.json) and, for the
training curves, the run's log.csv, so ``captionlab report`` can rebuild it at any time.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from .captioner import CaptionTrace
from .data.dataset import ImageRecord
from .errors import InputError, MissingError
from .files import atomic_write_text
from .metric_keys import CURVE_KEYS, KEY_ORDER
from .metrics.attributes import mistakes

THUMB = 112  # px, the longer side of an embedded thumbnail
_ASSETS = Path(__file__).with_name("report_assets")


def read_evaluation(folder: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """metrics.json and the image rows of per_image.json of one evaluation folder."""
    folder = Path(folder)
    missing = [n for n in ("metrics.json", "per_image.json") if not (folder / n).is_file()]
    if missing:
        raise MissingError(
            f"{folder} is not an evaluation folder with a report's data: no {' or '.join(missing)} "
            "(made by captionlab evaluate)"
        )
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    rows = json.loads((folder / "per_image.json").read_text(encoding="utf-8"))["images"]
    return metrics, rows


def thumbnail(path: str | Path | None) -> str:
    """A small JPEG of the image as a data URI ("" when the file is gone: the row shows no picture)."""
    if not path or not Path(path).is_file():
        return ""
    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((THUMB, THUMB))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def write_report(folder: str | Path, other: str | Path | None = None, out: str | Path | None = None) -> Path:
    """Build report.html of one evaluation folder, or (with ``other``) the comparison of two evaluations
    of the same split: B = ``other`` against A = ``folder``. Returns the page's path."""
    folder = Path(folder)
    metrics, rows = read_evaluation(folder)
    runs = [_run_summary(folder, metrics)]
    if other is None:
        data = {"compare": False, "rows": [_row(r) for r in rows]}
        title = f"{runs[0]['name']} on {metrics.get('split', '?')}"
        target = Path(out) if out else folder / "report.html"
    else:
        other = Path(other)
        metrics_b, rows_b = read_evaluation(other)
        _same_split(folder, metrics, rows, other, metrics_b, rows_b)
        runs.append(_run_summary(other, metrics_b))
        data = {"compare": True, "rows": _paired(rows, rows_b)}
        title = f"{runs[1]['name']} (B) against {runs[0]['name']} (A) on {metrics.get('split', '?')}"
        target = Path(out) if out else other / f"compare_{folder.name}.html"
    return _write_page(data, runs, title, target)


def _write_page(
    data: dict[str, Any], runs: list[dict[str, Any]], title: str, target: Path, stats: dict | None = None
) -> Path:
    """The page from its Jinja2 template, autoescaped: captions (a VLM's among them), file names and run
    names may hold markup, and none of it reaches the page unescaped."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(loader=FileSystemLoader(_ASSETS), autoescape=True, undefined=StrictUndefined)
    page = env.get_template("report.html.j2").render(
        title=title,
        style=(_ASSETS / "report.css").read_text(encoding="utf-8"),
        script=(_ASSETS / "report.js").read_text(encoding="utf-8"),
        runs=[_run_view(r) for r in runs],
        metric_keys=[k for k in KEY_ORDER if any(k in r["metrics"] for r in runs)],
        stats=stats,
        data=json.dumps(data, ensure_ascii=False).replace("</", "<\\/"),  # JSON inside <script>: no "</"
    )
    atomic_write_text(target, page, "report")
    return target


def image_rows(
    records: Sequence[ImageRecord],
    captions: dict[Any, str],
    references: dict[Any, list[str]],
    per_image: dict[Any, dict[str, float]],
    traces: dict[Any, CaptionTrace] | None,
    synthetic: bool = False,
) -> list[dict[str, Any]]:
    """per_image.json's rows: each image's file, caption, references and scores (from the same scorers
    as the corpus figures), what it gets wrong on the synthetic set, and where attention models looked."""
    size = None
    if synthetic and records:
        with Image.open(records[0].path) as im:
            size = im.size[0]
    rows = []
    for r in records:
        if r.image_id not in captions:
            continue
        row = {"image_id": r.image_id, "file": str(r.path), "caption": captions[r.image_id]}
        row |= {"references": list(references[r.image_id]), "scores": per_image[r.image_id]}
        if synthetic:
            row["wrong"] = mistakes(captions[r.image_id], r, size)
        rows.append(row | attention_fields(traces.get(r.image_id) if traces else None))
    return rows


def attention_fields(trace: CaptionTrace | None) -> dict[str, Any]:
    """Where an attention model looked for each word, as the page draws it: ``grid`` and per word the
    grid's weights, row by row (plus the sentinel weight of adaptive attention)."""
    if trace is None or trace.attention is None:  # attention: (words, grid, grid)
        return {}
    out: dict[str, Any] = {"grid": int(trace.attention.size(-1))}
    out["attention"] = [[round(float(v), 4) for v in w.flatten()] for w in trace.attention]
    if trace.sentinel is not None:
        out["sentinel"] = [round(float(v), 4) for v in trace.sentinel]
    return out


def write_caption_page(files: Sequence[Path], results: Sequence[str | CaptionTrace], out: str | Path) -> Path:
    """``caption --report``: the user's own images with their captions (and where attention models
    looked), on the same page as an evaluation, without references or scores."""
    rows = []
    for f, r in zip(files, results):
        trace = r if isinstance(r, CaptionTrace) else None
        row = {"image_id": str(f), "file": str(f), "caption": trace.caption if trace else r}
        rows.append(_row(row | {"references": [], "scores": {}} | attention_fields(trace)))
    return _write_page({"compare": False, "rows": rows}, [], f"captions of {len(rows)} images", Path(out))


def write_rebuild_page(
    images: Sequence[tuple[Any, Path, str, list[str]]], stats: dict[str, dict[str, Any]], out: str | Path
) -> Path:
    """``rebuild-export``'s page: per image (id, file, rebuilt caption, original captions) the new caption
    beside the old ones, under the statistics table it prints; searchable, with no scores."""
    rows = [_row({"image_id": i, "file": f, "caption": c, "references": old, "scores": {}}) for i, f, c, old in images]
    data = {"compare": False, "rows": rows, "labels": {"caption": "rebuilt caption", "refs": "original captions"}}
    return _write_page(data, [], f"rebuilt captions of {len(rows)} images", Path(out), stats)


def _row(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": r["image_id"],
        "thumb": thumbnail(r.get("file")),
        "caption": r["caption"],
        "refs": r["references"],
        "scores": r["scores"],
        "wrong": (r.get("wrong") or {}).get("words", []),
        "count": (r.get("wrong") or {}).get("count"),
        "attention": r.get("attention"),
        "sentinel": r.get("sentinel"),
        "grid": r.get("grid"),
    }


def _paired(rows_a: list[dict[str, Any]], rows_b: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_id = {r["image_id"]: r for r in rows_b}
    out = []
    for a in rows_a:
        b = by_id[a["image_id"]]
        row = _row(a)
        row.update(b_caption=b["caption"], b_scores=b["scores"], b_wrong=(b.get("wrong") or {}).get("words", []))
        row["diff"] = b["scores"].get("CIDEr", 0.0) - a["scores"].get("CIDEr", 0.0)
        out.append(row)
    return out


def _same_split(folder_a: Path, ma: dict, rows_a: list, folder_b: Path, mb: dict, rows_b: list) -> None:
    """Two evaluations compare only on the same images with the same references."""
    refs_a = {r["image_id"]: r["references"] for r in rows_a}
    refs_b = {r["image_id"]: r["references"] for r in rows_b}
    if ma.get("split") != mb.get("split") or refs_a != refs_b:
        raise InputError(
            f"{folder_a} ({ma.get('split')}, {len(refs_a)} images) and {folder_b} ({mb.get('split')}, "
            f"{len(refs_b)} images) are not evaluations of the same split and references: nothing to compare"
        )


def _run_summary(folder: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    run = metrics.get("run", {})
    checkpoint = run.get("checkpoint")
    log = Path(checkpoint).parent / "log.csv" if checkpoint else None
    return {
        "name": run.get("name") or folder.name,
        "folder": str(folder),
        "run": run,
        "settings": {k: metrics.get(k) for k in ("split", "images", "beam_size", "max_len", "tokenizer")},
        "metrics": metrics.get("metrics", {}),
        "curves": _curves(log) if log and log.is_file() else [],
    }


def _run_view(r: dict[str, Any]) -> dict[str, Any]:
    """What the template shows of a run: its facts, attribute and grounding figures, training curves."""
    run, metrics = r["run"], r["metrics"]
    facts = {**{k: run.get(k) for k in ("checkpoint", "model", "config", "date")}, **r["settings"]}
    grounding = metrics.get("grounding")
    return {
        "name": r["name"],
        "metrics": metrics,
        "facts": facts,
        "attrs": metrics.get("attribute_accuracy"),
        "grounding": grounding if isinstance(grounding, dict) else None,
        "curves": r["curves"],
    }


def _curves(log: Path) -> list[dict[str, Any]]:
    """The run's per-epoch curves (log.csv), one small inline SVG polyline per logged quantity."""
    from .runlog import read_log

    rows = read_log(log)
    logged = list(dict.fromkeys(k for r in rows for k in r))  # epoch 0 of a train.init_from run: val only
    keys = [k for k in logged if "loss" in k] + [k for k in CURVE_KEYS if k in logged]
    charts = []
    for key in keys[:6]:
        ys = [float(r[key]) for r in rows if key in r]
        lo, hi = min(ys), max(ys)
        span = (hi - lo) or 1.0
        pts = " ".join(
            f"{10 + 180 * i / max(1, len(ys) - 1):.1f},{70 - 55 * (y - lo) / span:.1f}" for i, y in enumerate(ys)
        )
        charts.append({"key": key, "points": pts, "first": ys[0], "last": ys[-1], "epochs": len(ys)})
    return charts
