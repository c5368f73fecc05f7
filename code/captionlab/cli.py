"""captionlab: train, evaluate and compare image-captioning models.

Each command is one call into the package (the notebooks and the Python API run the same code).
Run `captionlab COMMAND --help` for a command's options.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from .errors import InputError
from .metrics.coco import TOKENIZERS
from .paths import resolve

METRICS_HELP = "comma-separated metrics: Bleu, METEOR, ROUGE_L, CIDEr (SPICE where its jars are installed)"
TOKENIZER_HELP = (
    "how captions are tokenised before scoring: 'ptb' is the Stanford PTB tokenizer (Java), as the "
    "COCO server uses; 'ptb-python' the same tokens in-process (no Java); 'simple' lower-cases and drops "
    "punctuation"
)
ALL = "Bleu,METEOR,ROUGE_L,CIDEr"
DEVICE_HELP = "auto (CUDA when available, else CPU), cpu, cuda or cuda:N"
EPILOG = """examples:
  captionlab demo                                          # the whole story on the synthetic set, ends with a report
  captionlab train code/configs/cnn_gru.yaml train.epochs=5
  captionlab pretrain code/configs/pretrain.yaml            # contrastive pre-training, then clip_gpt.yaml
  captionlab tiny-hf code/configs/tiny/clipcap_mlp.yaml     # random CLIP/GPT-2 stand-ins, then train it
  captionlab evaluate output/model_ckpt/cnn_gru/best.pt --split test --beam-size 3
  captionlab caption output/model_ckpt/cnn_gru/best.pt photo.jpg photos/
  captionlab score results.json annotations.json
  captionlab serve output/model_ckpt/cnn_gru/best.pt          # web page + API on http://127.0.0.1:8000/
  captionlab rebuild --vlm llava --model /models/llava-1.5-7b-hf --images code/configs/deepfashion_cnn_gru.yaml \
      --preset precise --out output/rebuild/precise.jsonl   # then rebuild-export, then train on it
"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, but not the uninformative 'None' and 'False'."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, argparse.SUPPRESS) or not action.help:
            return action.help or ""
        return super()._get_help_string(action)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def _metrics(s: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in s.split(",") if m.strip())


def _overrides(a: argparse.Namespace) -> list[str]:
    extra = [f"data.on_bad_image={a.on_bad_image}"] if getattr(a, "on_bad_image", None) else []
    return [*a.overrides, *extra]


def cmd_synth(a: argparse.Namespace) -> None:
    from .data import synthetic

    ann = synthetic.generate(a.out, n=a.n, seed=a.seed, size=a.size, lang=a.lang)
    print(f"wrote {ann}")


def cmd_tiny_hf(a: argparse.Namespace) -> None:
    from .config import load_config
    from .models.hf import write_tiny_models

    clip, lm = write_tiny_models(load_config(a.config, _overrides(a)), a.overwrite)
    print(
        f"wrote a tiny random CLIPVisionModel to {clip} and a tiny GPT2LMHeadModel + tokenizer (a language model "
        f"of the training captions) to {lm}"
    )


def cmd_train(a: argparse.Namespace) -> None:
    from .config import load_config
    from .training.trainer import train
    from .viz import plot_training_curves

    cfg = load_config(a.config, _overrides(a))  # checked in full before anything is loaded or written
    resume: bool | str = a.resume if a.resume not in (None, "last") else a.resume == "last"
    result = train(cfg, resume=resume, overwrite=a.overwrite, progress=not a.no_progress)
    if result.history:  # rank 0 only
        plot_training_curves(result.run_dir / "log.csv", result.run_dir / "curves.png")
        best = " ".join(f"{k}={v:.3f}" for k, v in result.best_metrics.items())
        print(f"best epoch {result.best_epoch}: {best}\ncheckpoints: {result.run_dir}")


PRETRAIN = ["model.name=dual_encoder", "train.loss=contrastive", "train.select_metric=mean_recall"]


def cmd_pretrain(a: argparse.Namespace) -> None:
    a.overrides = [*PRETRAIN, *a.overrides]  # what pre-training means; the user's overrides still apply after
    cmd_train(a)


def _dataset_for(a: argparse.Namespace, cfg):
    import dataclasses

    from .data.adapters import load_dataset

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
    return load_dataset(data)


def cmd_evaluate(a: argparse.Namespace) -> None:
    from .captioner import load_checkpoint
    from .evaluation import evaluate_split, format_report, run_facts

    captioner = load_checkpoint(a.checkpoint, a.device)
    max_len = captioner.check_max_len(a.max_len or captioner.config.decode.max_len)  # before the data loads
    dataset = _dataset_for(a, captioner.config)
    beam = a.beam_size or captioner.config.decode.beam_size
    tag = f"ensemble{len(a.checkpoint)}_" if len(a.checkpoint) > 1 else ""
    out = Path(a.out) if a.out else Path(a.checkpoint[0]).parent / f"eval_{tag}{a.split}_beam{beam}"
    _, metrics = evaluate_split(
        captioner,
        dataset,
        a.split,
        beam,
        max_len,
        _metrics(a.metrics),
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
    print(format_report(f"{name} {a.split} beam {beam}", metrics))
    print(f"wrote {out / 'results.json'}, {out / 'metrics.json'}")
    if not a.no_report:
        print(f"report: {out / 'report.html'}")


def cmd_report(a: argparse.Namespace) -> None:
    from .report import write_report

    print(f"report: {write_report(a.eval_dir, a.other, a.out)}")


def cmd_caption(a: argparse.Namespace) -> None:
    from .captioner import load_checkpoint
    from .data.adapters import IMAGE_EXTS
    from .data.images import BadImageError, load_image

    n_ckpt = next((i for i, x in enumerate(a.inputs) if Path(x).suffix.lower() not in (".pt", ".pth")), len(a.inputs))
    if n_ckpt == 0:
        raise InputError(f"the first argument must be a checkpoint (.pt), got {a.inputs[0]!r}")
    if n_ckpt == len(a.inputs):
        raise InputError("no image given: captionlab caption CHECKPOINT.pt [...] IMAGE [IMAGE ...]")
    captioner = load_checkpoint(a.inputs[:n_ckpt], a.device)
    if a.max_len:
        captioner.check_max_len(a.max_len)  # before any image is read
    paths: list[Path] = []
    for p in map(Path, a.inputs[n_ckpt:]):
        found = sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_EXTS and q.is_file()) if p.is_dir() else [p]
        paths.extend(found or [p])  # an empty folder (or a folder named like an image) is reported below
    images, kept, skipped = [], [], 0
    for p in paths:
        try:
            images.append(load_image(p))
            kept.append(p)
        except BadImageError as e:
            if a.on_bad_image == "error":
                raise BadImageError(
                    f"{e} (to caption the other images and skip unreadable ones, pass --on-bad-image skip)"
                ) from None
            skipped += 1
            print(f"skipped: {e}", file=sys.stderr)
    if a.attention_plot and not kept:
        raise BadImageError("no readable image to caption")
    want = True if a.attention_plot else None if a.report else False  # None: where the model attends
    results = captioner.caption(
        images, beam_size=a.beam_size, max_len=a.max_len, batch_size=a.batch_size, with_attention=want
    )
    for i, (p, r) in enumerate(zip(kept, results)):
        print(f"{p}\t{r if isinstance(r, str) else r.caption}")
        if a.attention_plot:
            from .viz import attention_plot

            out = Path(a.attention_plot)
            if len(kept) > 1:  # one figure per image: out-<n>-<stem>.png
                out = out.with_name(f"{out.stem}-{i + 1}-{p.stem}{out.suffix or '.png'}")
            attention_plot(images[i], r.words, r.attention, captioner.config.data.image_size, r.sentinel, out)
            print(f"attention plot: {out}", file=sys.stderr)
    if skipped:
        print(f"captioned {len(kept)} image(s), skipped {skipped} unreadable", file=sys.stderr)
    if a.report:
        from .report import write_caption_page

        print(f"report: {write_caption_page(kept, results, a.report)}", file=sys.stderr)


def cmd_score(a: argparse.Namespace) -> None:
    from .metrics import score_files
    from .metrics.coco import write_json

    if a.fast and "METEOR" in _metrics(a.metrics or ""):
        raise InputError("--fast scores without Java, and METEOR needs it: drop METEOR from --metrics or --fast")
    metrics = score_files(
        a.results,
        a.annotations,
        _metrics(a.metrics or ("Bleu,ROUGE_L,CIDEr" if a.fast else ALL)),
        a.tokenizer or ("ptb-python" if a.fast else "ptb"),
        fast_cider=a.fast,
    )
    if a.fast and not a.metrics:
        print("METEOR not computed: it runs on Java (score without --fast to add it)", file=sys.stderr)
    if a.clipscore:
        from .metrics.clipscore import clip_scores
        from .metrics.coco import image_paths, load_annotations, load_results

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


def cmd_demo(a: argparse.Namespace) -> None:
    from .demo import DEMO_CONFIGS, run_demo

    run_demo(
        a.config or DEMO_CONFIGS,
        _overrides(a),
        beam_size=a.beam_size,
        progress=not a.no_progress,
        overwrite=a.overwrite,
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="captionlab", description=__doc__, epilog=EPILOG, formatter_class=HelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)

    def no_progress(s: argparse.ArgumentParser) -> None:
        s.add_argument(
            "--no-progress",
            action="store_true",
            help="no progress bars or progress lines (epoch summaries are still printed)",
        )

    def overrides(s: argparse.ArgumentParser) -> None:
        s.add_argument(
            "overrides",
            nargs="*",
            metavar="KEY=VALUE",
            help="config overrides, e.g. train.epochs=3 model.encoder.name=resnet18",
        )
        s.add_argument(
            "--on-bad-image",
            choices=["error", "skip"],
            help="what to do with an unreadable image in the dataset (sets data.on_bad_image; "
            "the config's value when not given)",
        )

    s = command("synth", "generate the synthetic captioning dataset (deterministic: same seed, same bytes)")
    s.add_argument(
        "--out",
        default="dataset/synthetic",
        type=resolve,
        help="output folder (relative paths are relative to the repository root)",
    )
    s.add_argument("--n", type=positive_int, default=5000, help="number of images (10%% val, 10%% test)")
    s.add_argument("--seed", type=int, default=0, help="random seed of the scenes and captions")
    s.add_argument("--size", type=positive_int, default=128, help="image side in pixels")
    s.add_argument(
        "--lang",
        choices=["en", "zh"],
        default="en",
        help="caption language: zh writes Chinese captions for the same scenes (train them with "
        "data.tokenizer=zh_char or zh_jieba and data.synthetic_lang=zh)",
    )
    s.set_defaults(func=cmd_synth)

    s = command(
        "tiny-hf",
        "write tiny random CLIP and GPT-2 models (real classes, save_pretrained layout) to a "
        "ClipCap config's model.clip / model.lm: ClipCap offline, without real weights",
    )
    s.add_argument("config", help="a ClipCap config, e.g. code/configs/tiny/clipcap_mlp.yaml")
    s.add_argument("--overwrite", action="store_true", help="replace existing directories")
    overrides(s)
    s.set_defaults(func=cmd_tiny_hf)

    for name, what, example, func in (
        ("train", "train a captioner from a YAML config", "code/configs/cnn_gru.yaml", cmd_train),
        (
            "pretrain",
            "contrastive image-text pre-training (CLIP-style dual encoder; sets model.name=dual_encoder, "
            "train.loss=contrastive, train.select_metric=mean_recall); best.pt by val retrieval recall",
            "code/configs/pretrain.yaml",
            cmd_pretrain,
        ),
    ):
        s = command(name, what)
        s.add_argument("config", help=f"YAML run config, e.g. {example}")
        overrides(s)
        s.add_argument(
            "--resume",
            nargs="?",
            const="last",
            default=None,
            metavar="CHECKPOINT",
            help="continue the run from its last.pt (or from the checkpoint given)",
        )
        s.add_argument("--overwrite", action="store_true", help="start the run again, deleting its checkpoints")
        no_progress(s)
        s.set_defaults(func=func)

    def data_args(s: argparse.ArgumentParser) -> None:
        s.add_argument("--data", help="dataset path (default: the one in the checkpoint's config)")
        s.add_argument(
            "--format",
            choices=["synthetic", "karpathy", "deepfashion", "tsv", "folder"],
            help="format of --data (default: the checkpoint's data.format)",
        )
        s.add_argument(
            "--image-root",
            help="folder the dataset's image paths are relative to (default: the annotation file's folder)",
        )
        s.add_argument(
            "--on-bad-image",
            choices=["error", "skip"],
            help="stop at an unreadable image, or skip it with a warning (default: the checkpoint's data.on_bad_image)",
        )

    def checkpoint_args(s: argparse.ArgumentParser, positional: bool = True) -> None:
        if positional:
            s.add_argument(
                "checkpoint",
                nargs="+",
                metavar="CHECKPOINT",
                help="a best.pt / last.pt written by 'captionlab train'; several are decoded as one "
                "ensemble (averaged word probabilities; same vocabulary)",
            )
        s.add_argument(
            "--beam-size",
            type=positive_int,
            help="beam width; 1 is greedy (default: decode.beam_size of the checkpoint's config)",
        )
        s.add_argument(
            "--max-len",
            type=positive_int,
            help="longest caption in words (default: decode.max_len of the checkpoint's config)",
        )
        s.add_argument("--device", default="auto", help=DEVICE_HELP)

    s = command("evaluate", "caption a split and score it (writes results.json, annotations.json, metrics.json)")
    checkpoint_args(s)
    s.add_argument("--split", default="test", choices=["train", "val", "test", "all"], help="which split to caption")
    s.add_argument("--out", help="output folder (default: eval_<split>_beam<k> next to the checkpoint)")
    s.add_argument("--metrics", default="Bleu,METEOR,ROUGE_L,CIDEr", help=METRICS_HELP)
    s.add_argument("--tokenizer", default="ptb", choices=TOKENIZERS, help=TOKENIZER_HELP)
    s.add_argument("--batch-size", type=positive_int, default=64, help="images decoded together")
    s.add_argument(
        "--grounding",
        action="store_true",
        help="attention models on the synthetic set: add the grounding rate (is the attention peak "
        "inside the box of the object a word names?) and its chance rate to metrics.json",
    )
    s.add_argument("--no-report", action="store_true", help="do not write per_image.json and report.html")
    data_args(s)
    no_progress(s)
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

    s = command("caption", "caption image files or folders; prints path<TAB>caption per image")
    s.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="one checkpoint (several: an ensemble), then image files and/or folders (searched "
        "recursively); the leading .pt/.pth files are the checkpoints",
    )
    s.usage = "captionlab caption [options] CHECKPOINT.pt [CHECKPOINT.pt ...] IMAGE [IMAGE ...]"
    checkpoint_args(s, positional=False)
    s.add_argument(
        "--on-bad-image",
        choices=["error", "skip"],
        default="error",
        help="stop at the first unreadable image, or skip it and caption the rest",
    )
    s.add_argument("--batch-size", type=positive_int, default=32, help="images decoded together")
    s.add_argument(
        "--attention-plot",
        metavar="OUT.png",
        help="also draw where the model looked for each word (attention models); with several "
        "images, one file each: OUT-<n>-<name>.png",
    )
    s.add_argument(
        "--report", metavar="OUT.html", help="also write a page of the images with their captions (and heat-maps)"
    )
    s.set_defaults(func=cmd_caption)

    s = command("score", "score a COCO results file against COCO caption annotations (any model's output)")
    s.add_argument("results", help='COCO results JSON: [{"image_id": ..., "caption": ...}, ...]')
    s.add_argument("annotations", help='COCO caption annotations JSON: {"annotations": [{"image_id", "caption"}]}')
    s.add_argument("--metrics", help=METRICS_HELP + f" (default: {ALL}; with --fast: Bleu,ROUGE_L,CIDEr)")
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

    s = command(
        "demo",
        "synthesise the dataset, train CNN+GRU and Show-Attend-Tell, evaluate, show captions, compare them in a report",
    )
    s.add_argument(
        "--config",
        action="append",
        help="run config, once per model (default: code/configs/demo/cnn_gru.yaml and show_attend_tell.yaml); "
        "with two or more, the report compares the last with the first",
    )
    overrides(s)
    s.add_argument("--beam-size", type=positive_int, default=3, help="beam width of the test evaluation")
    s.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run folder the config names (the demo's own is always replaced)",
    )
    no_progress(s)
    s.set_defaults(func=cmd_demo)

    from .serve.cli import add_commands as serve_commands
    from .vlm.cli import add_commands as vlm_commands

    vlm_commands(command, positive_int)
    serve_commands(command, positive_int)
    return p


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A user sees the warning's words on one line, not our source file and line."""
    print(f"captionlab: warning: {message}", file=file or sys.stderr)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Like ``parse_args``, but ``key=value`` overrides may also come after options
    (``train CONFIG --no-progress train.epochs=3``), which argparse alone rejects."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    stray = [x for x in extra if x.startswith("-") or "=" not in x]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from .errors import CaptionlabError
    from .training.resume import TrainingStopped

    previous = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        args.func(args)
    except KeyboardInterrupt:
        return 130
    except TrainingStopped as e:
        print(f"captionlab {args.command}: {e}", file=sys.stderr)
        return e.code
    except (CaptionlabError, OSError) as e:  # what a user can fix, and the machine (disk, permissions); bugs keep
        print(f"captionlab {args.command}: error: {e}", file=sys.stderr)  # their traceback
        return 2
    finally:
        warnings.showwarning = previous
    return 0


if __name__ == "__main__":
    sys.exit(main())
