"""``captionlab synth|train|evaluate|caption|score|demo``: thin wrappers over the package API."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from .paths import resolve

METRICS_HELP = "comma-separated: Bleu,METEOR,ROUGE_L,CIDEr (SPICE where its jars are installed)"


def _metrics(s: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in s.split(",") if m.strip())


def cmd_synth(a: argparse.Namespace) -> None:
    from .data import synthetic

    ann = synthetic.generate(a.out, n=a.n, seed=a.seed, size=a.size)
    print(f"wrote {ann}")


def cmd_train(a: argparse.Namespace) -> None:
    from .config import load_config
    from .training.trainer import train
    from .viz import plot_training_curves

    cfg = load_config(a.config, a.overrides)
    resume: bool | str = a.resume if a.resume not in (None, "last") else a.resume == "last"
    result = train(cfg, resume=resume, overwrite=a.overwrite, progress=not a.no_progress)
    if result.history:  # rank 0 only
        plot_training_curves(result.run_dir / "log.csv", result.run_dir / "curves.png")
        best = " ".join(f"{k}={v:.3f}" for k, v in result.best_metrics.items())
        print(f"best epoch {result.best_epoch + 1}: {best}\ncheckpoints: {result.run_dir}")


def _dataset_for(a: argparse.Namespace, cfg):
    import dataclasses

    from .data.adapters import load_dataset

    data = cfg.data
    if a.data:
        data = dataclasses.replace(data, path=a.data, format=a.format or data.format,
                                   image_root=a.image_root or None)
    if a.on_bad_image:
        data = dataclasses.replace(data, on_bad_image=a.on_bad_image)
    return load_dataset(data)


def cmd_evaluate(a: argparse.Namespace) -> None:
    from .captioner import load_checkpoint
    from .evaluation import evaluate_split, format_table

    captioner = load_checkpoint(a.checkpoint, a.device)
    dataset = _dataset_for(a, captioner.config)
    beam = a.beam_size or captioner.config.decode.beam_size
    out = Path(a.out) if a.out else Path(a.checkpoint).parent / f"eval_{a.split}_beam{beam}"
    _, metrics = evaluate_split(captioner, dataset, a.split, beam, a.max_len or captioner.config.decode.max_len,
                                _metrics(a.metrics), a.tokenizer, a.batch_size, out_dir=out)
    print(format_table({f"{Path(a.checkpoint).name} {a.split} beam {beam}": metrics}))
    print(f"wrote {out / 'results.json'}, {out / 'metrics.json'}")


def cmd_caption(a: argparse.Namespace) -> None:
    from .captioner import load_checkpoint
    from .data.adapters import IMAGE_EXTS
    from .data.images import BadImageError, load_image

    captioner = load_checkpoint(a.checkpoint, a.device)
    paths: list[Path] = []
    for p in map(Path, a.images):
        paths.extend(sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_EXTS) if p.is_dir() else [p])
    images, kept = [], []
    for p in paths:
        try:
            images.append(load_image(p))
            kept.append(p)
        except BadImageError as e:
            if a.on_bad_image == "error":
                raise
            print(f"skipped: {e}", file=sys.stderr)
    for p, c in zip(kept, captioner.caption(images, beam_size=a.beam_size, max_len=a.max_len)):
        print(f"{p}\t{c}")


def cmd_score(a: argparse.Namespace) -> None:
    from .metrics import score_files
    from .metrics.coco import write_json

    metrics = score_files(a.results, a.annotations, _metrics(a.metrics), a.tokenizer)
    print(json.dumps(metrics, indent=2))
    if a.out:
        write_json(metrics, a.out)


def cmd_demo(a: argparse.Namespace) -> None:
    from .demo import DEMO_CONFIG, run_demo

    run_demo(a.config or DEMO_CONFIG, a.overrides, beam_size=a.beam_size)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="captionlab", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="generate the synthetic captioning dataset")
    s.add_argument("--out", default="dataset/synthetic", type=resolve)
    s.add_argument("--n", type=int, default=5000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=int, default=128, help="image side in pixels")
    s.set_defaults(func=cmd_synth)

    s = sub.add_parser("train", help="train a captioner from a YAML config")
    s.add_argument("config")
    s.add_argument("overrides", nargs="*", help="key=value, e.g. train.epochs=3 model.encoder.name=resnet18")
    s.add_argument("--resume", nargs="?", const="last", default=None,
                   help="continue the run from its last.pt (or from the checkpoint given)")
    s.add_argument("--overwrite", action="store_true", help="start the run again, deleting its checkpoints")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=cmd_train)

    def data_args(s: argparse.ArgumentParser) -> None:
        s.add_argument("--data", help="dataset path (default: the one in the checkpoint's config)")
        s.add_argument("--format", choices=["synthetic", "karpathy", "deepfashion", "folder"])
        s.add_argument("--image-root")
        s.add_argument("--on-bad-image", choices=["error", "skip"])

    def checkpoint_args(s: argparse.ArgumentParser) -> None:
        s.add_argument("checkpoint")
        s.add_argument("--beam-size", type=int, help="default: decode.beam_size of the checkpoint's config")
        s.add_argument("--max-len", type=int, help="default: decode.max_len of the checkpoint's config")
        s.add_argument("--device", default="auto")

    s = sub.add_parser("evaluate", help="caption a split and score it (COCO results + metrics.json)")
    checkpoint_args(s)
    s.add_argument("--split", default="test")
    s.add_argument("--out", help="output folder (default: next to the checkpoint)")
    s.add_argument("--metrics", default="Bleu,METEOR,ROUGE_L,CIDEr", help=METRICS_HELP)
    s.add_argument("--tokenizer", default="ptb", choices=["ptb", "simple"])
    s.add_argument("--batch-size", type=int, default=64)
    data_args(s)
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("caption", help="caption image files or folders; prints path<TAB>caption")
    checkpoint_args(s)
    s.add_argument("images", nargs="+")
    s.add_argument("--on-bad-image", choices=["error", "skip"], default="error")
    s.set_defaults(func=cmd_caption)

    s = sub.add_parser("score", help="score a COCO results file against COCO caption annotations")
    s.add_argument("results")
    s.add_argument("annotations")
    s.add_argument("--metrics", default="Bleu,METEOR,ROUGE_L,CIDEr", help=METRICS_HELP)
    s.add_argument("--tokenizer", default="ptb", choices=["ptb", "simple"])
    s.add_argument("--out", help="also write the metrics JSON here")
    s.set_defaults(func=cmd_score)

    s = sub.add_parser("demo", help="synthesise, train CNN+GRU, evaluate, show captions")
    s.add_argument("--config", help="default: code/configs/demo/cnn_gru.yaml")
    s.add_argument("overrides", nargs="*")
    s.add_argument("--beam-size", type=int, default=3)
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .data.images import BadImageError
    from .metrics.coco import JavaMissingError
    from .models.encoders import MissingWeightsError

    try:
        args.func(args)
    except KeyboardInterrupt:
        return 130
    except (FileNotFoundError, FileExistsError, ValueError, KeyError, BadImageError, MissingWeightsError,
            JavaMissingError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"captionlab {args.command}: error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
