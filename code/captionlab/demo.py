"""``make demo``: the whole story on the embedded synthetic dataset, on a laptop CPU in minutes: the
CNN+GRU baseline and Show, Attend and Tell trained on the same images, evaluated, and compared in one page."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from .config import RunConfig, load_config
from .data.adapters import load_dataset
from .errors import InputError
from .evaluation import evaluate_checkpoint
from .metrics.coco import ALL_METRICS, check_java
from .metrics.tables import format_report
from .paths import CONFIGS, resolve
from .report import write_report
from .training.rundir import check_run_dir
from .training.trainer import train
from .viz import caption_grid, plot_training_curves

DEMO_CONFIGS = (CONFIGS / "demo" / "lite0_cnn_gru.yaml", CONFIGS / "demo" / "lite0_show_attend_tell.yaml")
COMPARE_PAGE = "demo_report.html"  # in train.output_dir: the last model (B) against the first (A)


SYNTHETIC_ONLY = (
    "note: these models have seen only synthetic shapes and cannot caption photographs. For real photos, train "
    "code/configs/flickr8k_show_attend_tell.yaml (a pretrained EfficientNet-Lite0 from the package index) or "
    "run code/08_real_photos.ipynb; README 'Real photographs'"
)


def made_by_demo(run_dir: Path, cfg: RunConfig) -> bool:
    """Whether ``run_dir`` holds a run of this very config (its data and model sections), which the demo
    may replace: a ``demo_*`` folder that another config trained into is the user's."""
    try:
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return False
    mine = cfg.to_dict()
    return isinstance(saved, dict) and all(saved.get(k) == mine[k] for k in ("data", "model"))


def demo_configs(configs: Sequence[str | Path], overrides: Sequence[str], overwrite: bool) -> list[RunConfig]:
    """Every config read and its run folder checked before any data is made: the demo replaces runs it
    made (``made_by_demo``), any other is refused unless ``overwrite``, as ``train`` does."""
    cfgs = [load_config(c, overrides) for c in configs]
    dirs = [resolve(c.train.output_dir) / c.train.run_name for c in cfgs]
    if len(set(dirs)) < len(dirs):
        raise InputError(f"the demo's models must train into different run folders; {len(dirs)} configs name {dirs[0]}")
    for cfg, run_dir in zip(cfgs, dirs, strict=True):
        check_run_dir(run_dir, False, overwrite or made_by_demo(run_dir, cfg))
    return cfgs


def run_demo(
    configs: Sequence[str | Path] = DEMO_CONFIGS,
    overrides: Sequence[str] = (),
    beam_size: int = 3,
    n_samples: int = 8,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, dict]:
    """``make demo``: train, evaluate and show each config's model (default: CNN+GRU, then Show, Attend
    and Tell), then write the comparison page of the last against the first. Returns each run's metrics."""
    t0 = time.time()
    check_java(ALL_METRICS, "ptb", "make demo's test evaluation (pycocoevalcap, as papers report)")
    cfgs = demo_configs(configs, overrides, overwrite)
    print(f"[1/4] data: {cfgs[0].data.format} dataset at {cfgs[0].data.path}")
    datasets = [load_dataset(c.data) for c in cfgs]  # generates the synthetic set on first use
    print("      splits: " + ", ".join(f"{k}={v}" for k, v in datasets[0].splits().items()))
    runs: dict[str, Path] = {}
    for i, (cfg, dataset) in enumerate(zip(cfgs, datasets, strict=True), 1):
        what = f"{cfg.model.name} ({cfg.model.encoder.name}) for {cfg.train.epochs} epochs"
        print(f"[2/4] training {what} ({i}/{len(cfgs)})")
        result = train(cfg, overwrite=True, progress=progress, dataset=dataset)  # demo_configs checked the folder
        plot_training_curves(result.run_dir / "log.csv", result.run_dir / "curves.png")
        print(f"      best epoch {result.best_epoch}; curves: {result.run_dir / 'curves.png'}")
        runs[cfg.train.run_name] = result.run_dir
    print(f"[3/4] evaluating each best.pt on test with beam {beam_size} (pycocoevalcap: PTB tokenizer, METEOR)")
    metrics, captions, evals = {}, {}, []
    for (name, run_dir), dataset in zip(runs.items(), datasets, strict=True):
        ckpt = run_dir / "best.pt"
        out_dir, results, metrics[name] = evaluate_checkpoint(ckpt, dataset, "test", beam_size, progress=progress)
        print(format_report(f"{name} beam {beam_size}", metrics[name]))
        captions[name] = {r["image_id"]: r["caption"] for r in results}
        evals.append(out_dir)
    show_samples(datasets[-1], captions, runs, n_samples)
    page = evals[0] / "report.html"
    if len(evals) > 1:  # the last model (B) against the first (A), image by image
        page = write_report(evals[0], evals[-1], resolve(cfgs[0].train.output_dir) / COMPARE_PAGE)
    print(f"done in {time.time() - t0:.0f}s; checkpoints and outputs in " + ", ".join(str(d) for d in runs.values()))
    print(f"report: {page}  (open it in a browser: every test image, its captions and scores)")
    if cfgs[0].data.format == "synthetic":
        print(SYNTHETIC_ONLY)
    return metrics


def show_samples(dataset, captions: dict[str, dict], runs: dict[str, Path], n_samples: int) -> None:
    """Print the first test images' captions by every model, and draw the last model's sample grid."""
    records = dataset.split("test")[:n_samples]
    last = list(runs)[-1]
    print(f"[4/4] sample test captions (grid: {runs[last] / 'samples.png'})")
    width = max(len(n) for n in captions)
    for r in records:
        print(f"  {r.path.name}")
        for name, by_id in captions.items():
            print(f"    {name:<{width}}  model: {by_id[r.image_id]!r}")
        print(f"    {'':<{width}}  reference: {r.captions[0]!r}")
    caption_grid(
        [r.path for r in records],
        [captions[last][r.image_id] for r in records],
        runs[last] / "samples.png",
        references=[r.captions[0] for r in records],
    )
