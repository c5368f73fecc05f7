"""captionlab: train, evaluate and compare image-captioning models.

Each command is one call into the package (the notebooks and the Python API run the same code).
Run `captionlab COMMAND --help` for a command's options.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from .commands import caption, evaluate, train
from .commands.args import positive_int
from .serve import cli as serve_cli
from .vlm import cli as vlm_cli

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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="captionlab", description=__doc__, epilog=EPILOG, formatter_class=HelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)

    for module in (train, evaluate, caption, vlm_cli, serve_cli):  # each adds its commands and their options
        module.add_commands(command, positive_int)
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
    resume = getattr(args, "resume", None)  # train's --resume [CHECKPOINT]; vlm-finetune's is a flag
    if isinstance(resume, str) and "=" in resume and not Path(resume).exists():  # `--resume train.epochs=20`
        args.resume, args.overrides = "last", [*args.overrides, resume]
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
