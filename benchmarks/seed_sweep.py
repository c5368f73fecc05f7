"""Train configs over several seeds at once and compare them on the test split.

One or two seeds of a demo-size run move its scores by more than two models differ (see docs/results.md), so
a claim like "adaptive attention matches Show-Attend-Tell" needs several seeds. This trains every
(config, seed) pair as its own `captionlab train` process, ``--parallel`` at a time (a GPU runs many
of these small models side by side), then decodes each best.pt on the test split and prints a table:
per seed, then mean and standard deviation per config, and the paired difference of the first two.

Usage: python benchmarks/seed_sweep.py code/configs/attention.yaml code/configs/adaptive.yaml \\
           --seeds 0,1,2,3,4 --parallel 10 [--device cuda] [override ...]
Test metrics: Bleu_4, ROUGE_L, CIDEr (pycocoevalcap, simple tokenizer: no Java needed), beam 3.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "code"))

METRICS = ("Bleu_4", "ROUGE_L", "CIDEr")


def train(config: str, seed: int, out: Path, device: str, threads: int, overrides: list[str]) -> Path:
    run = f"{Path(config).stem}_seed{seed}"
    cmd = [sys.executable, "-m", "captionlab.cli", "train", config, f"train.seed={seed}", f"train.run_name={run}"]
    cmd += [f"train.output_dir={out}", f"train.device={device}", "train.tensorboard=false", *overrides]
    cmd += ["--overwrite", "--no-progress"]
    path = os.pathsep.join([str(ROOT / "code"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": path}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{run} failed: {done.stderr[-1500:]}")
    with (out / run / "log.csv").open() as f:
        val = [float(r["CIDEr"]) for r in csv.DictReader(f)]
    print(f"{run}: val CIDEr-D by epoch " + " ".join(f"{v:.3f}" for v in val), flush=True)
    return out / run / "best.pt"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("configs", nargs="+", help="YAML run configs, then key=value overrides for all of them")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated train.seed values")
    ap.add_argument("--parallel", type=int, default=1, help="training processes at a time")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(ROOT / "output" / "model_ckpt" / "sweep"))
    ap.add_argument("--beam-size", type=int, default=3)
    a = ap.parse_intermixed_args()
    configs = [c for c in a.configs if "=" not in c]
    overrides = [c for c in a.configs if "=" in c]
    seeds = [int(s) for s in a.seeds.split(",")]

    from captionlab import load_checkpoint
    from captionlab.config import load_config
    from captionlab.data import load_dataset
    from captionlab.evaluation import evaluate_split

    for config in configs:  # generate each dataset once, before the parallel runs could race to write it
        load_dataset(load_config(config, overrides).data)
    threads = max(1, (os.cpu_count() or 1) // a.parallel)
    start = time.perf_counter()
    jobs = [(c, s) for c in configs for s in seeds]
    with ThreadPoolExecutor(a.parallel) as pool:
        done = list(pool.map(lambda j: train(*j, Path(a.out), a.device, threads, overrides), jobs))
    print(f"{len(jobs)} runs trained in {time.perf_counter() - start:.0f} s on {a.device}", flush=True)

    scores: dict[str, list[dict[str, float]]] = {c: [] for c in configs}
    print("| config | seed | best epoch | " + " | ".join(METRICS) + " |\n|---|---|---|" + "---|" * len(METRICS))
    for (config, seed), path in zip(jobs, done):
        captioner = load_checkpoint(path, a.device)
        dataset = load_dataset(captioner.config.data)
        _, metrics = evaluate_split(
            captioner,
            dataset,
            "test",
            a.beam_size,
            metrics=("Bleu", "ROUGE_L", "CIDEr"),
            tokenizer="simple",
            progress=False,
        )
        scores[config].append(metrics)
        epoch = torch.load(path, map_location="cpu", weights_only=False)["epoch"]
        row = " | ".join(f"{metrics[m]:.3f}" for m in METRICS)
        print(f"| {Path(config).stem} | {seed} | {epoch} | {row} |", flush=True)
    print("\n| config | " + " | ".join(f"{m} mean ± sd" for m in METRICS) + " |\n|---|" + "---|" * len(METRICS))
    for config, rows in scores.items():
        cells = [spread([r[m] for r in rows]) for m in METRICS]
        print(f"| {Path(config).stem} | " + " | ".join(cells) + " |")
    if len(configs) >= 2:
        first, second = scores[configs[0]], scores[configs[1]]
        diffs = [b["CIDEr"] - a_["CIDEr"] for a_, b in zip(first, second)]
        wins = sum(d >= 0 for d in diffs)
        print(
            f"\nCIDEr, {Path(configs[1]).stem} - {Path(configs[0]).stem}, paired by seed: {spread(diffs)} "
            f"(ahead or level on {wins} of {len(diffs)} seeds)"
        )


def spread(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


if __name__ == "__main__":
    main()
