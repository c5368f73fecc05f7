"""``caption``: a checkpoint (or an ensemble) over image files and folders."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError
from .args import add_decoding, apply_decoding


def split_inputs(inputs: Sequence[str]) -> tuple[list[str], list[Path]]:
    """The leading .pt/.pth arguments are the checkpoints, the rest images or folders."""
    n = next((i for i, x in enumerate(inputs) if Path(x).suffix.lower() not in (".pt", ".pth")), len(inputs))
    if n == 0:
        raise InputError(f"the first argument must be a checkpoint (.pt), got {inputs[0]!r}")
    if n == len(inputs):
        raise InputError("no image given: captionlab caption CHECKPOINT.pt [...] IMAGE [IMAGE ...]")
    return list(inputs[:n]), [Path(x) for x in inputs[n:]]


def image_paths(given: Sequence[Path]) -> list[Path]:
    """Files as given; folders searched recursively for images. An empty folder (or a folder named
    like an image) stays in the list, so that reading it says what is wrong with it."""
    from ..data.adapters import IMAGE_EXTS

    paths: list[Path] = []
    for p in given:
        found = sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_EXTS and q.is_file()) if p.is_dir() else [p]
        paths.extend(found or [p])
    return paths


def read_images(paths: Sequence[Path], on_bad_image: str) -> tuple[list, list[Path], int]:
    """(images, their paths, how many were skipped as unreadable)."""
    from ..data.images import BadImageError, load_image

    images, kept, skipped = [], [], 0
    for p in paths:
        try:
            images.append(load_image(p))
            kept.append(p)
        except BadImageError as e:
            if on_bad_image == "error":
                raise BadImageError(
                    f"{e} (to caption the other images and skip unreadable ones, pass --on-bad-image skip)"
                ) from None
            skipped += 1
            print(f"skipped: {e}", file=sys.stderr)
    return images, kept, skipped


def plot_attention(out: Path, images: list, kept: list[Path], results: list, image_size: int) -> None:
    """One figure per image: OUT.png for one image, OUT-<n>-<stem>.png for several."""
    from ..viz import attention_plot

    for i, (p, r) in enumerate(zip(kept, results)):
        path = out.with_name(f"{out.stem}-{i + 1}-{p.stem}{out.suffix or '.png'}") if len(kept) > 1 else out
        attention_plot(images[i], r.words, r.attention, image_size, r.sentinel, path)
        print(f"attention plot: {path}", file=sys.stderr)


def cmd_caption(a: argparse.Namespace) -> None:
    """Streams: ``--batch-size`` images are read, captioned and printed at a time, so a folder of
    thousands of phone photos needs the memory of one batch (all of them only for --attention-plot)."""
    from ..captioner import load_checkpoint
    from ..data.images import BadImageError
    from ..progress import progress, write

    checkpoints, given = split_inputs(a.inputs)
    captioner = load_checkpoint(checkpoints, a.device)
    apply_decoding(a, captioner)
    if a.max_len:
        captioner.check_max_len(a.max_len)  # before any image is read
    if a.n_best > 1 and (a.attention_plot or a.report):
        raise InputError("--n-best lists several captions an image: not with --attention-plot or --report")
    captioner.check_n_best(a.n_best, a.beam_size)
    paths = image_paths(given)
    want = True if a.attention_plot else None if a.report else False  # None: where the model attends
    images, kept, results, skipped = [], [], [], 0
    bar = progress(total=len(paths), desc="captioning", unit="img", enabled=len(paths) > a.batch_size)
    for start in range(0, len(paths), a.batch_size):
        chunk, chunk_kept, bad = read_images(paths[start : start + a.batch_size], a.on_bad_image)
        out = captioned(captioner, chunk, a, want) if chunk else []
        for p, r in zip(chunk_kept, out):
            for line in lines_of(r):
                write(f"{p}\t{line}")  # as it goes, beside the bar (on stderr)
        images += chunk if a.attention_plot else []
        kept += chunk_kept
        results += out
        skipped += bad
        bar.update(len(chunk) + bad)
    bar.close()
    if a.attention_plot and not kept:
        raise BadImageError("no readable image to caption")
    if a.attention_plot:
        plot_attention(Path(a.attention_plot), images, kept, results, captioner.config.data.image_size)
    if skipped:
        print(f"captioned {len(kept)} image(s), skipped {skipped} unreadable", file=sys.stderr)
    if a.out:
        write_results(Path(a.out), kept, results)
    if a.report:
        from ..report import write_caption_page

        print(f"report: {write_caption_page(kept, results, a.report)}", file=sys.stderr)


def captioned(captioner: Any, images: list, a: argparse.Namespace, want: bool | None) -> list:
    """One batch: a caption (or trace) an image, or with ``--n-best`` a ranked list of (caption, score)."""
    if a.n_best > 1:
        return captioner.n_best(images, a.n_best, a.beam_size, a.max_len)
    return captioner.caption(images, beam_size=a.beam_size, max_len=a.max_len, batch_size=len(images),
                             with_attention=want)  # fmt: skip


def caption_of(result: Any) -> str:
    """A caption, a captioned result with attention (``with_attention``), or the first of the n best."""
    if isinstance(result, list):
        return result[0][0]
    return result if isinstance(result, str) else result.caption


def lines_of(result: Any) -> list[str]:
    """What is printed after an image's path: its caption, or the n best as rank, caption, score."""
    if isinstance(result, list):
        return [f"{i}\t{c}\t{score:.3f}" for i, (c, score) in enumerate(result, 1)]
    return [caption_of(result)]


def write_results(out: Path, kept: list[Path], results: list) -> None:
    """COCO-format results (``image_id``, ``caption``) with each image's ``file_name``, so a folder
    can be scored (``captionlab score``) or submitted later."""
    from ..files import write_json

    rows = [
        {"image_id": i, "file_name": str(p), "caption": caption_of(r)} for i, (p, r) in enumerate(zip(kept, results))
    ]
    for row, r in zip(rows, results):
        if isinstance(r, list):  # --n-best: the ranked captions beside the best
            row["n_best"] = [{"caption": c, "score": round(score, 4)} for c, score in r]
    write_json(rows, out)
    print(f"wrote {out} ({len(rows)} captions)", file=sys.stderr)


def add_commands(command: Callable[[str, str], argparse.ArgumentParser], positive_int: Callable) -> None:
    s = command("caption", "caption image files or folders; prints path<TAB>caption per image")
    s.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="one checkpoint (several: an ensemble), then image files and/or folders (searched "
        "recursively); the leading .pt/.pth files are the checkpoints",
    )
    s.usage = "captionlab caption [options] CHECKPOINT.pt [CHECKPOINT.pt ...] IMAGE [IMAGE ...]"
    add_decoding(s)
    s.add_argument(
        "--on-bad-image",
        choices=["error", "skip"],
        default="error",
        help="stop at the first unreadable image, or skip it and caption the rest",
    )
    s.add_argument("--batch-size", type=positive_int, default=32, help="images decoded together")
    s.add_argument(
        "--n-best",
        type=positive_int,
        default=1,
        metavar="N",
        help="print the N best beams of each image (path, rank, caption, score: log-probability over the "
        "length penalty); N is at most the beam size",
    )
    s.add_argument(
        "--attention-plot",
        metavar="OUT.png",
        help="also draw where the model looked for each word (attention models); with several "
        "images, one file each: OUT-<n>-<name>.png",
    )
    s.add_argument(
        "--report", metavar="OUT.html", help="also write a page of the images with their captions (and heat-maps)"
    )
    s.add_argument(
        "--out", metavar="FILE.json", help="also write the captions as COCO-format results (with file names)"
    )
    s.set_defaults(func=cmd_caption)
