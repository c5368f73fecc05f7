"""``make demo``: the whole story on the embedded synthetic dataset, on a laptop CPU in minutes."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from .captioner import load_checkpoint
from .config import load_config
from .data.adapters import load_dataset
from .evaluation import evaluate_split, format_report
from .paths import CONFIGS, resolve
from .training.rundir import check_run_dir
from .training.trainer import train
from .viz import caption_grid, plot_training_curves

DEMO_CONFIG = CONFIGS / "demo" / "cnn_gru.yaml"


SYNTHETIC_ONLY = (
    "note: this model has seen only synthetic shapes and cannot caption photographs. For real photos, train "
    "code/configs/flickr8k_show_attend_tell.yaml (a pretrained EfficientNet-Lite0 from the package index) or "
    "run code/08_real_photos.ipynb; README 'Real photographs'"
)


def run_demo(
    config: str | Path = DEMO_CONFIG,
    overrides: Sequence[str] = (),
    beam_size: int = 3,
    n_samples: int = 8,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, float]:
    """``make demo``: train, evaluate and show one model. It replaces its own run folder
    (``demo_*`` run names) on every run; any other is refused unless ``overwrite``, as ``train`` does."""
    t0 = time.time()
    cfg = load_config(config, overrides)
    overwrite = overwrite or cfg.train.run_name.startswith("demo_")
    check_run_dir(resolve(cfg.train.output_dir) / cfg.train.run_name, False, overwrite)  # before any data is made
    print(f"[1/4] data: {cfg.data.format} dataset at {cfg.data.path}")
    dataset = load_dataset(cfg.data)  # generates the synthetic set on first use
    print("      splits: " + ", ".join(f"{k}={v}" for k, v in dataset.splits().items()))
    print(f"[2/4] training {cfg.model.name} ({cfg.model.encoder.name}) for {cfg.train.epochs} epochs")
    result = train(cfg, overwrite=overwrite, progress=progress, dataset=dataset)
    run_dir = result.run_dir
    plot_training_curves(run_dir / "log.csv", run_dir / "curves.png")
    print(f"      best epoch {result.best_epoch}; curves: {run_dir / 'curves.png'}")
    print(f"[3/4] evaluating best.pt on test with beam {beam_size} (pycocoevalcap: PTB tokenizer, METEOR)")
    captioner = load_checkpoint(run_dir / "best.pt")
    out_dir = run_dir / f"eval_test_beam{beam_size}"
    results, metrics = evaluate_split(
        captioner, dataset, "test", beam_size, cfg.decode.max_len, out_dir=out_dir, progress=progress
    )
    print(format_report(f"{cfg.model.name} beam {beam_size}", metrics))
    print(f"[4/4] sample test captions (grid: {run_dir / 'samples.png'})")
    records = dataset.split("test")[:n_samples]
    by_id = {r["image_id"]: r["caption"] for r in results}
    for r in records:
        print(
            f"  {r.path.name}  model: {by_id[r.image_id]!r}\n  {' ' * len(r.path.name)}  reference: {r.captions[0]!r}"
        )
    caption_grid(
        [r.path for r in records],
        [by_id[r.image_id] for r in records],
        run_dir / "samples.png",
        references=[r.captions[0] for r in records],
    )
    print(f"done in {time.time() - t0:.0f}s; checkpoints and outputs in {run_dir}")
    if cfg.data.format == "synthetic":
        print(SYNTHETIC_ONLY)
    return metrics
