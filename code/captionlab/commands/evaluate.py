"""``evaluate``, ``report`` and ``score``: the commands that measure captions."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path

from ..data.adapters import ADAPTERS
from ..errors import InputError
from ..metrics.coco import TOKENIZERS, check_java
from ..paths import resolve
from .args import (
    ALL_METRICS,
    BAD_IMAGE,
    FAST_METRICS,
    METRICS_HELP,
    TOKENIZER_HELP,
    add_decoding,
    add_no_progress,
    apply_decoding,
    metric_list,
)


def dataset_for(a: argparse.Namespace, cfg):
    """The checkpoint's dataset, or the one --data/--format/--image-root name."""
    from ..data.adapters import load_dataset

    data = cfg.data
    if a.data:
        data = dataclasses.replace(data, path=a.data, format=a.format or data.format, image_root=a.image_root or None)
        made = resolve(a.data) / "dataset_synthetic.json"
        if data.format == "synthetic" and made.is_file():  # read the set that is there, never remake it
            meta = json.loads(made.read_text()).get("meta", {})
            have = {f"synthetic_{k}": meta.get(k) for k in ("n", "seed", "size", "lang")}
            data = dataclasses.replace(data, **{k: v for k, v in have.items() if v is not None})
    if a.on_bad_image:
        data = dataclasses.replace(data, on_bad_image=a.on_bad_image)
    return load_dataset(data, (a.split,))  # only the split it scores has its images checked


def cmd_evaluate(a: argparse.Namespace) -> None:
    from ..captioner import load_checkpoint
    from ..evaluation import evaluate_split, run_facts
    from ..metrics.tables import format_report

    metrics = metric_list(a.metrics)  # a misspelt name is refused before anything loads
    if (a.format or a.image_root) and not a.data:
        raise InputError("--format and --image-root describe --data, which is not given: add --data PATH or drop them")
    fast = f" or score without it: --tokenizer ptb-python --metrics {','.join(m for m in metrics if m != 'METEOR')}"
    check_java(metrics, a.tokenizer, "captionlab evaluate", fast)
    captioner = load_checkpoint(a.checkpoint, a.device)
    apply_decoding(a, captioner)
    max_len = captioner.check_max_len(a.max_len or captioner.config.decode.max_len)  # before the data loads
    dataset = dataset_for(a, captioner.config)
    beam = a.beam_size or captioner.config.decode.beam_size
    tag = f"ensemble{len(a.checkpoint)}_" if len(a.checkpoint) > 1 else ""
    other = f"{Path(a.data).stem}_" if a.data else ""  # another dataset's evaluation never replaces the in-domain one
    out = Path(a.out) if a.out else Path(a.checkpoint[0]).parent / f"eval_{other}{tag}{a.split}_beam{beam}"
    _, scores = evaluate_split(
        captioner,
        dataset,
        a.split,
        beam,
        max_len,
        metrics,
        a.tokenizer,
        a.batch_size,
        out_dir=out,
        progress=not a.no_progress,
        grounding=a.grounding,
        report=not a.no_report,
        run=run_facts(a.checkpoint, captioner.config),
    )
    name = (
        " + ".join(f"{Path(c).parent.name}/{Path(c).name}" for c in a.checkpoint)
        if len(a.checkpoint) < 4
        else f"{len(a.checkpoint)} checkpoints"
    )
    print(format_report(f"{name} {a.split} beam {beam}", scores))
    print(f"wrote {out / 'results.json'}, {out / 'metrics.json'}")
    if not a.no_report:
        print(f"report: {out / 'report.html'}")


def cmd_report(a: argparse.Namespace) -> None:
    from ..report import write_report

    print(f"report: {write_report(a.eval_dir, a.other, a.out)}")


def cmd_score(a: argparse.Namespace) -> None:
    from ..files import write_json
    from ..metrics import score_files

    if a.fast and "METEOR" in metric_list(a.metrics or ""):
        raise InputError("--fast scores without Java, and METEOR needs it: drop METEOR from --metrics or --fast")
    metrics = score_files(
        a.results,
        a.annotations,
        metric_list(a.metrics or (FAST_METRICS if a.fast else ALL_METRICS)),
        a.tokenizer or ("ptb-python" if a.fast else "ptb"),
        fast_cider=a.fast,
    )
    if a.fast and not a.metrics:
        print("METEOR not computed: it runs on Java (score without --fast to add it)", file=sys.stderr)
    if a.clipscore:
        from ..metrics.clipscore import clip_scores
        from ..metrics.coco import image_paths, load_annotations, load_results

        metrics.update(
            clip_scores(
                a.clipscore,
                load_results(a.results),
                load_annotations(a.annotations),
                image_paths(a.annotations, a.images),
            )
        )
    print(json.dumps(metrics, indent=2))
    if a.out:
        write_json(metrics, a.out)


def _data_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--data", help="dataset path (default: the one in the checkpoint's config)")
    s.add_argument(
        "--format", choices=ADAPTERS.names(), help="format of --data (default: the checkpoint's data.format)"
    )
    s.add_argument(
        "--image-root",
        help="folder the dataset's image paths are relative to (default: the annotation file's folder)",
    )
    s.add_argument(
        "--on-bad-image",
        choices=BAD_IMAGE,
        help="stop at an unreadable image, or skip it with a warning (default: the checkpoint's data.on_bad_image)",
    )


def add_commands(command: Callable[[str, str], argparse.ArgumentParser], positive_int: Callable) -> None:
    s = command("evaluate", "caption a split and score it (writes results.json, annotations.json, metrics.json)")
    s.add_argument(
        "checkpoint",
        nargs="+",
        metavar="CHECKPOINT",
        help="a best.pt / last.pt written by 'captionlab train'; several are decoded as one "
        "ensemble (averaged word probabilities; same vocabulary)",
    )
    add_decoding(s)
    s.add_argument("--split", default="test", choices=["train", "val", "test", "all"], help="which split to caption")
    s.add_argument("--out", help="output folder (default: eval_<split>_beam<k> next to the checkpoint)")
    s.add_argument("--metrics", default=ALL_METRICS, help=METRICS_HELP)
    s.add_argument("--tokenizer", default="ptb", choices=TOKENIZERS, help=TOKENIZER_HELP)
    s.add_argument("--batch-size", type=positive_int, default=64, help="images decoded together")
    s.add_argument(
        "--grounding",
        action="store_true",
        help="attention models on the synthetic set: add the grounding rate (is the attention peak "
        "inside the box of the object a word names?) and its chance rate to metrics.json",
    )
    s.add_argument("--no-report", action="store_true", help="do not write per_image.json and report.html")
    _data_args(s)
    add_no_progress(s)
    s.set_defaults(func=cmd_evaluate)

    s = command("report", "(re)build report.html of an evaluation folder, or compare two evaluations of one split")
    s.add_argument(
        "eval_dir", metavar="EVAL_DIR", help="a folder captionlab evaluate wrote (metrics.json, per_image.json)"
    )
    s.add_argument("other", metavar="EVAL_DIR_2", nargs="?", help="a second evaluation of the same split: B against A")
    s.add_argument(
        "--out", help="where to write the page (default: EVAL_DIR/report.html, or EVAL_DIR_2/compare_<A>.html)"
    )
    s.set_defaults(func=cmd_report)

    s = command("score", "score a COCO results file against COCO caption annotations (any model's output)")
    s.add_argument("results", help='COCO results JSON: [{"image_id": ..., "caption": ...}, ...]')
    s.add_argument("annotations", help='COCO caption annotations JSON: {"annotations": [{"image_id", "caption"}]}')
    s.add_argument("--metrics", help=METRICS_HELP + f" (default: {ALL_METRICS}; with --fast: {FAST_METRICS})")
    s.add_argument("--tokenizer", choices=TOKENIZERS, help=TOKENIZER_HELP + " (default: ptb; with --fast: ptb-python)")
    s.add_argument(
        "--fast",
        action="store_true",
        help="no Java: the PTB tokenizer in Python and the vectorised CIDEr-D (pycocoevalcap's BLEU, ROUGE-L "
        "and CIDEr-D to 1e-6), for big files; METEOR needs Java and is left out",
    )
    s.add_argument("--out", help="also write the metrics JSON to this file")
    s.add_argument(
        "--clipscore",
        metavar="CLIP_DIR",
        help="add CLIPScore and RefCLIPScore (Hessel et al. 2021) from a CLIP model in this local Hugging "
        "Face directory (CLIPModel + processor, save_pretrained layout); needs the images",
    )
    s.add_argument(
        "--images",
        metavar="DIR",
        help="folder of the annotation file's images (file_name); default: the file_path captionlab "
        "writes, else the annotation file's folder",
    )
    s.set_defaults(func=cmd_score)
