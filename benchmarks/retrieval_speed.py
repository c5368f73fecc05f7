"""What retrieval costs at inference: retrieval_transformer's search of its datastore against the beam-3
caption of the same photos.

Usage: python benchmarks/retrieval_speed.py [--rows 612,6000,113000] [--batch 32] [--repeats 5]

The model is code/configs/flickr8k_retrieval_transformer.yaml's (Lite0 regions 7x7x1280, 2-layer decoder,
k=4) with random weights and a datastore of random rows: the cost of a search and of a beam depends on
sizes, not on trained values. From cached features, as `evaluate` decodes: "search" is the pooled query
against every datastore row (one matrix product) and the top-k; "retrieval" adds gathering and embedding the
neighbours' words; "beam 3" is a whole caption of max_len 20, retrieval included. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "code"))

from captionlab import decoding
from captionlab.config import load_config
from captionlab.models import build_model
from captionlab.models.base import FeatureInput


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="612,6000,113000", help="datastore sizes (Flickr8k subset, Flickr8k, COCO)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    cfg = load_config(ROOT / "code" / "configs" / "flickr8k_retrieval_transformer.yaml", ["model.encoder.frozen=true",
                      "model.encoder.pretrained=false"])  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg.model, 2000).eval()
    feats = torch.randn(a.batch, cfg.model.grid_size**2, model.encoder.out_dim)  # (B, 49, 1280)
    fed = FeatureInput(model)
    rows = ["| datastore rows | search ms | retrieval ms | beam 3 ms | retrieval / beam |", "|---|---|---|---|---|"]
    for n in (int(x) for x in a.rows.split(",")):
        length = cfg.data.max_caption_len + 1
        model.fill_datastore(torch.randn(n, model.encoder.out_dim), torch.randint(4, 2000, (n, 5, length)))
        search = best_of(lambda: model.store.nearest(feats, model.k), a.repeats)
        retrieval = best_of(lambda: model.memory_of(feats), a.repeats) - best_of(lambda: model.memory(feats), a.repeats)
        beam = best_of(lambda: decoding.beam_search(fed, feats, beam_size=3, max_len=20), a.repeats)
        rows.append(f"| {n} | {1e3 * search:.1f} | {1e3 * retrieval:.1f} | {1e3 * beam:.0f} | {retrieval / beam:.1%} |")
    print(f"batch {a.batch}, {torch.get_num_threads()} threads, best of {a.repeats}\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
