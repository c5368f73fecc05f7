"""``synth``, ``tiny-hf``, ``train``, ``pretrain`` and ``demo``: the commands that make data or train."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from ..config import PRETRAIN
from ..paths import resolve
from .args import add_no_progress, add_overrides, overrides


def cmd_synth(a: argparse.Namespace) -> None:
    from ..data import synthetic

    ann = synthetic.generate(a.out, n=a.n, seed=a.seed, size=a.size, lang=a.lang)
    print(f"wrote {ann}")


def cmd_tiny_hf(a: argparse.Namespace) -> None:
    from ..config import load_config
    from ..models.tiny_hf import write_tiny_models

    cfg = load_config(a.config, overrides(a))
    clip, lm = write_tiny_models(cfg, a.overwrite, a.lm_hidden, a.lm_layers, a.lm_steps, a.lm_vocab)
    vision = f"a tiny random CLIPVisionModel to {clip} and " if clip else ""
    print(f"wrote {vision}a GPT2LMHeadModel + tokenizer (a language model of the training captions) to {lm}")


def cmd_train(a: argparse.Namespace) -> None:
    from ..config import load_config
    from ..training.trainer import train
    from ..viz import plot_training_curves

    cfg = load_config(a.config, overrides(a))  # checked in full before anything is loaded or written
    resume: bool | str = a.resume if a.resume not in (None, "last") else a.resume == "last"
    result = train(cfg, resume=resume, overwrite=a.overwrite, progress=not a.no_progress)
    if result.history:  # rank 0 only
        plot_training_curves(result.run_dir / "log.csv", result.run_dir / "curves.png")
        best = " ".join(f"{k}={v:.3f}" for k, v in result.best_metrics.items())
        print(f"best epoch {result.best_epoch}: {best}\ncheckpoints: {result.run_dir}")


def cmd_pretrain(a: argparse.Namespace) -> None:
    a.overrides = [*PRETRAIN, *a.overrides]  # what pre-training means; the user's overrides still apply after
    cmd_train(a)


def cmd_demo(a: argparse.Namespace) -> None:
    from ..demo import DEMO_CONFIGS, run_demo

    run_demo(
        a.config or DEMO_CONFIGS,
        overrides(a),
        beam_size=a.beam_size,
        progress=not a.no_progress,
        overwrite=a.overwrite,
    )


def cmd_cache(a: argparse.Namespace) -> None:
    from ..training.feature_cache import cache_folder, list_caches

    folder = cache_folder(a.dir)
    caches = list_caches(folder)
    if not caches:
        print(f"no feature caches in {folder}")
        return
    for npy, size, info in caches:
        what = (
            f"{info['encoder']} ({info['features']}), {info['images']} images from "
            f"{Path(info['first_image'] or '.').parent}, made {info['made']}"
            if info
            else "made before caches recorded what made them"
        )
        print(f"{npy.name}  {size / 1e6:.1f} MB  {what}")
    total = sum(size for _, size, _ in caches) / 1e6
    if a.clear:
        for npy, _, _ in caches:
            npy.unlink()
            npy.with_suffix(".json").unlink(missing_ok=True)
        print(f"removed {len(caches)} feature caches ({total:.1f} MB) from {folder}")
    else:
        print(f"{len(caches)} feature caches, {total:.1f} MB, in {folder}; captionlab cache --clear removes them")


def add_commands(command: Callable[[str, str], argparse.ArgumentParser], positive_int: Callable) -> None:
    s = command("synth", "generate the synthetic captioning dataset (deterministic: same seed, same bytes)")
    s.add_argument(
        "--out",
        default="dataset/synthetic",
        type=resolve,
        help="output folder (relative to the working directory)",
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
    s.add_argument("--lm-hidden", type=positive_int, default=64, help="GPT-2's width (n_embd)")
    s.add_argument("--lm-layers", type=positive_int, default=2, help="GPT-2's blocks")
    s.add_argument("--lm-steps", type=int, default=200, help="steps of language-model training on the captions")
    s.add_argument("--lm-vocab", type=positive_int, default=400, help="byte-level BPE pieces of GPT-2's tokenizer")
    add_overrides(s)
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
        add_overrides(s)
        s.add_argument(
            "--resume",
            nargs="?",
            const="last",
            default=None,
            metavar="CHECKPOINT",
            help="continue the run from its last.pt (or from the checkpoint given)",
        )
        s.add_argument("--overwrite", action="store_true", help="start the run again, deleting its checkpoints")
        add_no_progress(s)
        s.set_defaults(func=func)

    s = command("cache", "list the frozen-encoder feature caches (size, what made them); --clear removes them")
    s.add_argument("--dir", help="the cache folder (default: $CAPTIONLAB_CACHE_DIR, else output/cache)")
    s.add_argument("--clear", action="store_true", help="remove every cache in it (each is rebuilt when next needed)")
    s.set_defaults(func=cmd_cache)

    s = command(
        "demo",
        "synthesise the dataset, train CNN+GRU and Show-Attend-Tell, evaluate, show captions, compare them in a report",
    )
    s.add_argument(
        "--config",
        action="append",
        help="run config, once per model (default: code/configs/demo/lite0_cnn_gru.yaml and "
        "lite0_show_attend_tell.yaml); with two or more, the report compares the last with the first",
    )
    add_overrides(s)
    s.add_argument("--beam-size", type=positive_int, default=3, help="beam width of the test evaluation")
    s.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run folder the config names (the demo's own is always replaced)",
    )
    add_no_progress(s)
    s.set_defaults(func=cmd_demo)
