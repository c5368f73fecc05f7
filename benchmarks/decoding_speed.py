"""Decoding throughput of the shared engine: batched beam search vs one image at a time.

Prints a markdown table (images/s) for a CNN+GRU of the demo's size on random 64x64 images.
Usage: python benchmarks/decoding_speed.py [--device cpu|cuda] [--images 64]
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from captionlab import decoding
from captionlab.config import EncoderConfig, ModelConfig
from captionlab.models import build_model


def timed(fn, repeat: int = 3) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=20)
    a = ap.parse_args()
    torch.manual_seed(0)
    cfg = ModelConfig(name="cnn_gru", encoder=EncoderConfig(name="resnet18", pretrained=False), embed_dim=128,
                      hidden_dim=256, dropout=0.0)
    model = build_model(cfg, vocab_size=60).to(a.device).eval()
    images = torch.randn(a.images, 3, 64, 64, device=a.device)
    print(f"device: {a.device} ({torch.cuda.get_device_name() if a.device == 'cuda' else platform.processor() or platform.machine()}), "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}, {a.images} images, max_len {a.max_len}")
    print("| decoder | batched img/s | one-by-one img/s | speed-up |")
    print("|---|---|---|---|")
    for name, k in (("greedy", 1), ("beam 3", 3), ("beam 5", 5)):
        with torch.no_grad():
            batched = timed(lambda: decoding.decode(model, images, k, a.max_len))
            single = timed(lambda: [decoding.decode(model, images[i:i + 1], k, a.max_len) for i in range(a.images)], 1)
        print(f"| {name} | {a.images / batched:.0f} | {a.images / single:.0f} | {single / batched:.1f}x |")


if __name__ == "__main__":
    main()
