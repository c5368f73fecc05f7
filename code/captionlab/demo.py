"""``make demo``: the whole story on the embedded synthetic dataset, on a laptop CPU in minutes."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from .captioner import load_checkpoint
from .config import load_config
from .data.adapters import load_dataset
from .evaluation import evaluate_split, format_report
from .paths import CONFIGS
from .training.trainer import train
from .viz import caption_grid, plot_training_curves

DEMO_CONFIG = CONFIGS / "demo" / "cnn_gru.yaml"


def run_demo(
    config: str | Path = DEMO_CONFIG,
    overrides: Sequence[str] = (),
    beam_size: int = 3,
    n_samples: int = 8,
    progress: bool = True,
) -> dict[str, float]:
    t0 = time.time()
    cfg = load_config(config, overrides)
    print(f"[1/4] data: {cfg.data.format} dataset at {cfg.data.path}")
    dataset = load_dataset(cfg.data)  # generates the synthetic set on first use
    print("      splits: " + ", ".join(f"{k}={v}" for k, v in dataset.splits().items()))
    print(f"[2/4] training {cfg.model.name} ({cfg.model.encoder.name}) for {cfg.train.epochs} epochs")
    result = train(cfg, overwrite=True, progress=progress, dataset=dataset)  # the demo's own run folder
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
    return metrics
