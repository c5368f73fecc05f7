"""``captionlab rebuild-export``: rebuilt captions -> a Karpathy-format dataset ``captionlab train`` reads.

The source dataset's images, ids, splits and object boxes are kept; only the captions change, so a
model trained on the rebuilt data is evaluated on the same test images against either set of
references (S0 section 5, S1 4.2.4).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, MissingError
from ..files import atomic_write_text
from ..paths import resolve
from .rebuild import image_keys
from .records import read_records


@dataclass
class ExportResult:
    out: Path
    images: int
    dropped: list[str]  # images whose rebuilt caption came back empty
    stats: dict[str, dict[str, Any]]  # "original" / "rebuilt" -> caption statistics
    plot: Path | None
    page: Path | None  # report.html: each image's rebuilt caption beside its original ones


def export_rebuilt(
    records_file: str | Path, source_config: str | Path, out: str | Path, plot: bool = True, report: bool = True
) -> ExportResult:
    from ..config import load_config
    from ..data.adapters import load_dataset
    from ..data.tokenizers import build_tokenizer

    path = resolve(records_file)
    header, records = read_records(path, repair=False)
    if header is None:
        raise MissingError(f"{path}: no rebuilt captions (write them with `captionlab rebuild --out {path}`)")
    cfg = load_config(resolve(source_config))
    ds = load_dataset(cfg.data)
    rebuilt = {r["image"]: r for r in records}
    keys = image_keys(ds)
    missing = [k for k in keys if k not in rebuilt]
    if missing:
        raise InputError(
            f"{len(missing)} of {len(keys)} images of {ds.source} have no record in {path} (first: {missing[0]}): "
            "finish the rebuild (rerun the same command; it continues), or check that --source is the dataset "
            f"the rebuild captioned ({header.get('images')})"
        )
    out = resolve(out)
    images, dropped, pairs = [], [], []
    for n, (r, k) in enumerate(zip(ds.records, keys)):
        caption = rebuilt[k]["caption"].strip()
        if not caption:
            dropped.append(k)
            continue
        pairs.append((r.image_id, r.path, caption, list(r.captions)))
        images.append(
            {
                "filepath": Path(os.path.relpath(r.path.parent, out.parent)).as_posix(),
                "filename": r.path.name,
                "split": r.split,
                "imgid": n,
                "cocoid": r.image_id,
                "sentences": [{"raw": caption, "tokens": caption.lower().split()}],
                **({"objects": r.objects} if r.objects else {}),
            }
        )
    name = out.parent.name or "rebuilt"
    dataset = {
        "dataset": name,
        "rebuilt_from": str(ds.source),
        "rebuild": {k: header.get(k) for k in header if k != "type"},
    }
    atomic_write_text(out, json.dumps({**dataset, "images": images}, ensure_ascii=False), "rebuilt dataset")
    words = build_tokenizer(cfg.data.tokenizer)
    stats = {
        "original": caption_stats([c for r in ds.records for c in r.captions], words.tokenize),
        "rebuilt": caption_stats([im["sentences"][0]["raw"] for im in images], words.tokenize),
    }
    atomic_write_text(out.with_name("stats.json"), json.dumps(stats, indent=2, ensure_ascii=False), "statistics")
    figure = stats_plot(stats, out.with_name("stats.png")) if plot else None
    page = None
    if report:
        from ..report import write_rebuild_page

        page = write_rebuild_page(pairs, stats, out.with_name("report.html"))
    return ExportResult(out, len(images), dropped, stats, figure, page)


def caption_stats(captions: list[str], tokenize: Any, top: int = 15) -> dict[str, Any]:
    lengths = [len(tokenize(c)) for c in captions]
    counts = Counter(w for c in captions for w in tokenize(c))
    return {
        "captions": len(captions),
        "mean_length": sum(lengths) / max(len(lengths), 1),
        "max_length": max(lengths, default=0),
        "vocabulary": len(counts),
        "lengths": dict(sorted(Counter(lengths).items())),
        "top_words": counts.most_common(top),
    }


def stats_plot(stats: dict[str, dict[str, Any]], out: Path) -> Path:
    """Length histograms side by side, and each set's most frequent words."""
    from matplotlib.figure import Figure  # not pyplot: a notebook's inline backend stays as it is

    fig = Figure(figsize=(5 + 4 * len(stats), 4))
    axes = fig.subplots(1, 1 + len(stats))
    for name, s in stats.items():
        lengths = {int(k): v for k, v in s["lengths"].items()}
        total = max(sum(lengths.values()), 1)
        axes[0].bar(list(lengths), [v / total for v in lengths.values()], alpha=0.5, label=name)
    axes[0].set(title="caption length", xlabel="words", ylabel="share of captions")
    axes[0].legend()
    for ax, (name, s) in zip(axes[1:], stats.items()):
        words = s["top_words"][:12][::-1]
        ax.barh([w for w, _ in words], [c for _, c in words])
        ax.set(title=f"{name}: most frequent words (vocabulary {s['vocabulary']})")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    return out
