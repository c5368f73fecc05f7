"""Fast CIDEr-D vs pycocoevalcap's Cider on identical tokens.

5,000 images x 5 references, both scorers on the same tokenised strings. ``--corpus coco`` (default)
draws COCO-like captions: 8-16 words from a Zipf-distributed vocabulary of 9,490 words (COCO's
Karpathy-split vocabulary size), candidates sharing part of a reference; ``--corpus synthetic`` uses
the embedded dataset's short template captions. Prints both times (best of --repeat) and the largest
per-image difference.
Usage: python benchmarks/cider_speed.py [--corpus coco|synthetic] [--images 5000] [--refs 5] [--repeat 3]
"""

from __future__ import annotations

import argparse
import platform
import random
import time

import numpy as np
from pycocoevalcap.cider.cider import Cider

from captionlab.data.synthetic import captions_for, render_scene
from captionlab.metrics.cider import cider_d


def coco_like(n: int, refs: int, seed: int = 0, vocab: int = 9490) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab + 1)
    p /= p.sum()
    words = np.array([f"w{i}" for i in range(vocab)])

    def caption() -> list[str]:
        return list(words[rng.choice(vocab, size=int(rng.integers(8, 17)), p=p)])

    references, candidates = {}, {}
    for i in range(n):
        references[i] = [" ".join(caption()) for _ in range(refs)]
        ref = references[i][0].split()
        cut = int(rng.integers(0, len(ref)))
        candidates[i] = [" ".join(ref[:cut] + caption()[: int(rng.integers(2, 9))])]  # a right start, then noise
    return candidates, references


def synthetic(n: int, refs: int, seed: int = 0) -> tuple[dict, dict]:
    rng = random.Random(seed)
    references, candidates = {}, {}
    for i in range(n):
        _, objs = render_scene(rng, 32)
        caps = captions_for(objs, rng, n=refs)
        references[i] = [c.replace(",", " ,").replace(":", " :") for c in (caps * refs)[:refs]]
        candidates[i] = [rng.choice(references[max(0, i - rng.randint(0, 3))])]  # right, or a neighbour's
    return candidates, references


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", choices=["coco", "synthetic"], default="coco")
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--refs", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    cands, refs = (coco_like if a.corpus == "coco" else synthetic)(a.images, a.refs)
    t_ref, (score_ref, each_ref) = best_of(lambda: Cider().compute_score(refs, cands), a.repeat)
    t_ours, (score_ours, each_ours) = best_of(lambda: cider_d(cands, refs), a.repeat)
    diff = float(np.abs(np.asarray(each_ref) - each_ours).max())
    print(
        f"{a.corpus} corpus, {a.images} images x {a.refs} references; {platform.processor() or platform.machine()}, "
        f"numpy {np.__version__}"
    )
    print("| scorer | seconds | corpus CIDEr-D |")
    print("|---|---|---|")
    print(f"| pycocoevalcap Cider | {t_ref:.3f} | {score_ref:.6f} |")
    print(f"| captionlab cider_d | {t_ours:.3f} | {score_ours:.6f} |")
    print(f"speed-up {t_ref / t_ours:.1f}x; largest per-image difference {diff:.2e}")


if __name__ == "__main__":
    main()
