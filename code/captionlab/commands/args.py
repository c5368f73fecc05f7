"""Options that several commands share."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import InputError
from ..metrics import coco

METRICS_HELP = f"comma-separated metrics: {', '.join(coco.SCORERS.names())} (SPICE where its jars are installed)"
TOKENIZER_HELP = (
    "how captions are tokenised before scoring: 'ptb' is the Stanford PTB tokenizer (Java), as the "
    "COCO server uses; 'ptb-python' the same tokens in-process (no Java); 'simple' lower-cases and drops "
    "punctuation"
)
ALL_METRICS = ",".join(coco.ALL_METRICS)  # the defaults: every metric but SPICE
FAST_METRICS = ",".join(coco.FAST_METRICS)  # no Java
DEVICE_HELP = "auto (CUDA when available, else CPU), cpu, cuda or cuda:N"
BAD_IMAGE = ["error", "skip"]


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def metric_list(s: str) -> tuple[str, ...]:
    """``--metrics`` as names, refused in one line (before any captioning) where one is unknown."""
    return coco.check_metrics(m.strip() for m in s.split(",") if m.strip())


def add_no_progress(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars or progress lines (epoch summaries are still printed)",
    )


def add_overrides(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, e.g. train.epochs=3 model.encoder.name=resnet18",
    )
    s.add_argument(
        "--on-bad-image",
        choices=BAD_IMAGE,
        help="what to do with an unreadable image in the dataset (sets data.on_bad_image; "
        "the config's value when not given)",
    )


def overrides(a: argparse.Namespace) -> list[str]:
    """The KEY=VALUE overrides, with --on-bad-image as the one it stands for."""
    extra = [f"data.on_bad_image={a.on_bad_image}"] if getattr(a, "on_bad_image", None) else []
    return [*a.overrides, *extra]


def add_decoding(s: argparse.ArgumentParser) -> None:
    """What decoding a checkpoint takes from the command line instead of its config."""
    s.add_argument(
        "--beam-size",
        type=positive_int,
        help="beam width; 1 is greedy (default: decode.beam_size of the checkpoint's config)",
    )
    s.add_argument(
        "--max-len",
        type=positive_int,
        help="decoding steps a caption may take, <end> included: at most MAX_LEN - 1 words (GPT-2 models: BPE "
        "pieces) (default: decode.max_len of the checkpoint's config)",
    )
    s.add_argument(
        "--length-penalty",
        type=float,
        metavar="ALPHA",
        help="beam search ranks finished captions by log-probability / length**ALPHA; 0 favours short ones "
        "(default: decode.length_penalty of the checkpoint's config)",
    )
    s.add_argument("--device", default="auto", help=DEVICE_HELP)


def apply_decoding(a: argparse.Namespace, captioner: Any) -> None:
    """``--length-penalty`` into the checkpoint's decode settings, which every decode of it reads."""
    if a.length_penalty is not None:
        if a.length_penalty < 0:
            raise InputError(f"--length-penalty must be 0 or more, got {a.length_penalty}")
        captioner.config.decode.length_penalty = a.length_penalty
