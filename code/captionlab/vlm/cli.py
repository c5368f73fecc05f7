"""The VLM commands of the CLI: ``rebuild``, ``rebuild-export``, ``vlm-finetune``, ``tiny-vlm``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from .models import DTYPES, KINDS
from .rebuild import PRESETS

VLM_HELP = "which model family the directory holds: " + ", ".join(KINDS)
MODEL_HELP = "local model directory, as save_pretrained writes it (config.json, weights, processor files)"


def cmd_rebuild(a: argparse.Namespace) -> None:
    from .rebuild import RebuildOptions, rebuild

    result = rebuild(
        RebuildOptions(
            vlm=a.vlm,
            model=a.model,
            images=a.images,
            out=a.out,
            prompt=a.prompt,
            preset=a.preset,
            adapter=a.adapter,
            batch_size=a.batch_size,
            dtype=a.dtype,
            max_new_tokens=a.max_new_tokens,
            load_in_8bit=a.load_in_8bit,
            device=a.device,
            generation={"temperature": a.temperature, "top_p": a.top_p, "num_beams": a.num_beams}
            | ({"do_sample": a.sample} if a.sample is not None else {})
            | ({"repetition_penalty": a.repetition_penalty} if a.repetition_penalty else {}),
            max_sentences=a.max_sentences,
            seed=a.seed,
            overwrite=a.overwrite,
            on_bad_image=a.on_bad_image,
            progress=not a.no_progress,
        )
    )
    done = "nothing left to caption" if result.new == 0 else f"captioned {result.new} image(s)"
    extra = f", {result.retried} retried after an empty answer, {result.empty} still empty" if result.retried else ""
    print(f"{done}{extra}; {result.out}: {result.images} image(s) in the source ({result.seconds:.1f} s)")


def cmd_rebuild_export(a: argparse.Namespace) -> None:
    from ..metrics.tables import stats_table
    from .export import export_rebuilt

    r = export_rebuilt(a.records, a.source, a.out, plot=not a.no_plot, report=not a.no_report)
    print(stats_table(r.stats))
    if r.dropped:
        print(
            f"left out {len(r.dropped)} image(s) whose rebuilt caption is empty (first: {r.dropped[0]})",
            file=sys.stderr,
        )
    extra = "".join(f", {p}" for p in (r.plot, r.page) if p)
    print(f"wrote {r.out} ({r.images} images), {r.out.with_name('stats.json')}{extra}")


def cmd_vlm_finetune(a: argparse.Namespace) -> None:
    from .finetune import FinetuneOptions, finetune

    r = finetune(
        FinetuneOptions(
            vlm=a.vlm,
            model=a.model,
            data=a.data,
            out=a.out,
            prompt=a.prompt,
            epochs=a.epochs,
            max_steps=a.max_steps,
            batch_size=a.batch_size,
            lr=a.lr,
            lora_r=a.lora_r,
            lora_alpha=a.lora_alpha,
            dtype=a.dtype,
            device=a.device,
            seed=a.seed,
            progress=not a.no_progress,
            resume=a.resume,
            save_every_steps=a.save_every_steps,
        )
    )
    print(f"{r.steps} steps, loss {r.losses[0]:.3f} -> {r.losses[-1]:.3f} ({r.seconds:.0f} s); adapter: {r.out}")


def cmd_tiny_vlm(a: argparse.Namespace) -> None:
    from ..config import load_config
    from ..data.adapters import load_dataset
    from .tiny import save_tiny_vlm

    texts = [c for r in load_dataset(load_config(a.data).data, ("train",)).split("train") for c in r.captions]
    for kind in a.vlm:
        out = save_tiny_vlm(kind, f"{a.out}/{kind}", texts, lm_steps=a.lm_steps)
        print(f"wrote a tiny random {kind} to {out}")


Command = Callable[[str, str], argparse.ArgumentParser]


def add_commands(command: Command, positive_int: Callable) -> None:
    _add_rebuild(command, positive_int)
    _add_rebuild_export(command)
    _add_vlm_finetune(command, positive_int)
    _add_tiny_vlm(command)


def _common(s: argparse.ArgumentParser) -> None:
    """The model options of rebuild and vlm-finetune."""
    s.add_argument("--vlm", required=True, choices=list(KINDS), help=VLM_HELP)
    s.add_argument("--model", required=True, metavar="DIR", help=MODEL_HELP)
    s.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", *DTYPES],
        help="weights' precision (auto: float16 on a GPU, float32 on a CPU)",
    )
    s.add_argument("--device", default="auto", help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N")
    s.add_argument("--seed", type=int, default=0, help="random seed (sampling, shuffling)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_rebuild(command: Command, positive_int: Callable) -> None:
    s = command(
        "rebuild",
        "caption every image of a folder or dataset with a vision-language model (InstructBLIP, BLIP-2, LLaVA) "
        "into a resumable JSONL file; under torchrun the images are shared out by rank",
    )
    _common(s)
    s.add_argument(
        "--images",
        required=True,
        metavar="DIR_OR_CONFIG",
        help="a folder of images, or a run config (.yaml) whose data section names the dataset (all splits)",
    )
    s.add_argument(
        "--prompt", default="Describe this image in one sentence.", help="the instruction given with every image"
    )
    s.add_argument(
        "--preset",
        default="precise",
        choices=list(PRESETS),
        help="precise: greedy decoding; creative: sampling, temperature 0.9, top-p 0.9 (S1's two datasets)",
    )
    s.add_argument(
        "--out", required=True, metavar="FILE.jsonl", help="output: a header line, then one JSON record per image"
    )
    s.add_argument("--adapter", metavar="DIR", help="LoRA adapter written by vlm-finetune, merged into the model")
    s.add_argument(
        "--batch-size", type=positive_int, default=8, help="images per generate call (lower it on CUDA out of memory)"
    )
    s.add_argument("--max-new-tokens", type=positive_int, default=60, help="longest answer in tokens")
    s.add_argument(
        "--load-in-8bit",
        action="store_true",
        help="8-bit weights (bitsandbytes, CUDA only): about half the memory of float16",
    )
    s.add_argument("--temperature", type=float, help="sampling temperature (overrides the preset)")
    s.add_argument("--top-p", type=float, help="nucleus sampling mass (overrides the preset)")
    s.add_argument("--num-beams", type=positive_int, help="beam search width (overrides the preset)")
    s.add_argument(
        "--sample",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="sample (--sample) or decode greedily / by beam (--no-sample), overriding the preset",
    )
    s.add_argument("--repetition-penalty", type=float, help="transformers' repetition_penalty (1.0 = none)")
    s.add_argument("--max-sentences", type=positive_int, help="keep only the first N sentences of each answer")
    s.add_argument(
        "--overwrite", action="store_true", help="start again when --out holds a rebuild made with other settings"
    )
    s.add_argument(
        "--on-bad-image",
        choices=["error", "skip"],
        default="error",
        help="stop at an unreadable image, or leave it out",
    )
    s.set_defaults(func=cmd_rebuild)


def _add_rebuild_export(command: Command) -> None:
    s = command(
        "rebuild-export",
        "turn rebuilt captions into a Karpathy-format dataset (same images, ids and splits) and compare "
        "their statistics with the original captions",
    )
    s.add_argument("records", metavar="FILE.jsonl", help="the output of captionlab rebuild")
    s.add_argument("--source", required=True, metavar="CONFIG", help="run config naming the dataset that was rebuilt")
    s.add_argument(
        "--out",
        required=True,
        metavar="dataset/NAME/dataset.json",
        help="Karpathy JSON to write (stats.json, stats.png and report.html go beside it)",
    )
    s.add_argument("--no-plot", action="store_true", help="no stats.png")
    s.add_argument("--no-report", action="store_true", help="no report.html (old and new captions per image)")
    s.set_defaults(func=cmd_rebuild_export)


def _add_vlm_finetune(command: Command, positive_int: Callable) -> None:
    s = command(
        "vlm-finetune",
        "train LoRA adapters (peft) on (image, fixed prompt, reference caption) with the loss on the answer "
        "tokens only; rebuild --adapter DIR uses them",
    )
    _common(s)
    s.add_argument("--data", required=True, metavar="CONFIG", help="run config naming the dataset (its train split)")
    s.add_argument(
        "--prompt", default="Please describe this image in deepfashion dataset style.", help="the fixed prompt (S1's)"
    )
    s.add_argument("--out", required=True, metavar="DIR", help="adapter folder to write")
    s.add_argument("--epochs", type=positive_int, default=1, help="passes over every (image, caption) pair")
    s.add_argument("--max-steps", type=positive_int, help="stop after this many steps")
    s.add_argument("--batch-size", type=positive_int, default=8, help="pairs per step (lower it on out of memory)")
    s.add_argument("--lr", type=float, default=2e-4, help="AdamW learning rate")
    s.add_argument("--lora-r", type=positive_int, default=8, help="LoRA rank")
    s.add_argument("--lora-alpha", type=positive_int, default=16, help="LoRA scaling numerator")
    s.add_argument(
        "--resume", action="store_true", help="continue the run in --out exactly where its last save left it"
    )
    s.add_argument(
        "--save-every-steps",
        type=int,
        default=0,
        metavar="N",
        help="also save every N steps inside an epoch (default: at each epoch's end and on SIGTERM / Ctrl-C)",
    )
    s.set_defaults(func=cmd_vlm_finetune)


def _add_tiny_vlm(command: Command) -> None:
    s = command(
        "tiny-vlm",
        "write tiny random InstructBLIP / BLIP-2 / LLaVA models (real classes and processors, save_pretrained "
        "layout, language model trained on the dataset's captions): the VLM commands offline, without real weights",
    )
    s.add_argument(
        "--data", required=True, metavar="CONFIG", help="run config whose training captions the language model reads"
    )
    s.add_argument(
        "--out", required=True, metavar="DIR", help="one folder per model: DIR/instructblip, DIR/blip2, DIR/llava"
    )
    s.add_argument("--vlm", nargs="+", choices=list(KINDS), default=list(KINDS), help="which to write")
    s.add_argument("--lm-steps", type=int, default=300, help="language-model training steps on the captions")
    s.set_defaults(func=cmd_tiny_vlm)
