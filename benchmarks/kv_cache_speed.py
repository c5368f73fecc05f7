"""vit_transformer decoding with and without its key/value cache, as max_len grows.

With the cache a step embeds one token and attends over the cached keys, so the time per caption
grows in proportion to max_len (flat per token); recomputing the whole prefix at every step makes
each step as long as the prefix, so the time per token grows with max_len. Decoder of a COCO-like
size (vocabulary 10,000, width 512, 8 heads, 3 layers) on 14x14 patch features (given directly,
no ViT), beam 5, <end> suppressed so every caption runs to max_len; random weights.
Usage: python benchmarks/kv_cache_speed.py [--device cpu|cuda] [--images 8] [--lens 10,20,40]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from captionlab import decoding  # noqa: E402
from captionlab.config import ModelConfig  # noqa: E402
from captionlab.models.base import FeatureInput  # noqa: E402
from captionlab.models.transformer import ViTTransformer  # noqa: E402
from decoding_speed import NoEnd, machine, timed  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--lens", default="10,20,40")
    a = p.parse_args()
    torch.manual_seed(0)
    cfg = ModelConfig(
        name="vit_transformer", hidden_dim=512, num_heads=8, ff_dim=2048, num_layers=3, dropout=0.0, max_positions=64
    )
    model = ViTTransformer(cfg, 10_000, feature_dim=768).to(a.device).eval()
    feats = torch.randn(a.images, 196, 768, device=a.device)
    fed = NoEnd(FeatureInput(model))
    print(machine(a.device))
    print(f"beam {a.beam}, {a.images} images, 14x14 patch features, vocabulary 10,000, 3 layers of width 512\n")
    print("| max_len | with cache: ms/caption | ms/token | without cache: ms/caption | ms/token | speed-up |")
    print("|---|---|---|---|---|---|")
    for n in (int(x) for x in a.lens.split(",")):
        times = {}
        for cached in (True, False):
            model.use_cache = cached
            times[cached] = (
                timed(lambda n=n: decoding.beam_search(fed, feats, a.beam, n, keep_greedy=False), repeat=2)
                / a.images
                * 1000
            )
        model.use_cache = True
        print(
            f"| {n} | {times[True]:.1f} | {times[True] / n:.2f} | {times[False]:.1f} | {times[False] / n:.2f} "
            f"| {times[False] / times[True]:.1f}x |"
        )


if __name__ == "__main__":
    main()
