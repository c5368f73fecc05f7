"""What writing per_image.json and report.html adds to `evaluate`: 500 test images of a synthetic set
(5,000 images at 96 px, made in a temporary folder), the tiny Show-Attend-Tell config with random weights
(the page's cost does not depend on what the model learned), beam 3, BLEU/ROUGE-L/CIDEr-D with the
in-process PTB tokens; `evaluate_split` with and without the report, best of --repeat each.
Usage: python benchmarks/report_speed.py [--images 5000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import tempfile
import time
from pathlib import Path

import torch

from captionlab.captioner import Captioner
from captionlab.config import load_config
from captionlab.data import load_dataset
from captionlab.evaluation import evaluate_split
from captionlab.models import build_model
from captionlab.training.setup import build_vocab

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        # ResNet-18, as when BENCHMARKS.md recorded its figures (the tiny config now trains the small CNN)
        cfg = load_config(ROOT / "code" / "configs" / "tiny" / "attention.yaml", ["model.encoder.name=resnet18"])
        data = dataclasses.replace(cfg.data, path=str(Path(tmp) / "synthetic"), synthetic_n=a.images, synthetic_size=96)
        cfg = dataclasses.replace(cfg, data=data)
        dataset = load_dataset(data)
        vocab = build_vocab(cfg, dataset)
        captioner = Captioner(build_model(cfg.model, len(vocab)).eval(), vocab, cfg)
        n = len(dataset.split("test"))
        times = {}
        for report in (False, True):
            best = float("inf")
            for i in range(a.repeat + 1):  # the first run warms up
                t = time.perf_counter()
                evaluate_split(captioner, dataset, "test", 3, 16, ("Bleu", "ROUGE_L", "CIDEr"), "ptb-python",
                               out_dir=Path(tmp) / f"eval{int(report)}", progress=False, report=report)  # fmt: skip
                best = min(best, time.perf_counter() - t) if i else best
            times[report] = best
    print(f"{platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}; {n} test images")
    print("| evaluate | seconds |\n|---|---|")
    print(f"| --no-report | {times[False]:.2f} |\n| with per_image.json + report.html | {times[True]:.2f} |")
    print(f"the report adds {times[True] - times[False]:.2f} s")


if __name__ == "__main__":
    main()
