"""`captionlab score` (pycocoevalcap, Java PTB tokenizer) vs `captionlab score --fast` (the PTB tokenizer in
Python, vectorised CIDEr-D) on 5,000 images x 5 references, through the same `score_files` the CLI calls.

Captions: the real Flickr8k captions of ``--data`` (../shared/flickr8k_subset, 875 images x 5), cycled to
``--images`` image ids; each image's "result" is a held-out sixth caption drawn from another image's
captions, so the scores are those of a weak captioner. Without the subset, the synthetic set's captions.
Prints both times (best of --repeat, each a whole scoring run, Java start-up included) and the largest
difference of the shared metrics.
Usage: python benchmarks/score_speed.py [--data ../shared/flickr8k_subset] [--images 5000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import tempfile
import time
from pathlib import Path

from captionlab.metrics.coco import score_files

SHARED = Path(__file__).resolve().parents[2] / "shared" / "flickr8k_subset"


def captions(data: Path) -> tuple[list[list[str]], str]:
    if (data / "dataset_flickr8k.json").is_file():
        images = json.loads((data / "dataset_flickr8k.json").read_text())["images"]
        return [[s["raw"] for s in im["sentences"]] for im in images], f"Flickr8k captions of {data}"
    from captionlab.data.synthetic import captions_for, render_scene

    rng = random.Random(0)
    return [captions_for(render_scene(rng, 64)[1], rng) for _ in range(500)], "synthetic captions"


def write_files(folder: Path, pool: list[list[str]], n: int) -> tuple[Path, Path]:
    rng = random.Random(0)
    images, annotations, results = [], [], []
    for i in range(n):
        refs = pool[i % len(pool)]
        images.append({"id": i})
        annotations += [{"image_id": i, "caption": c} for c in refs[:5]]
        results.append({"image_id": i, "caption": rng.choice(pool[rng.randrange(len(pool))])})
    (folder / "annotations.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    (folder / "results.json").write_text(json.dumps(results))
    return folder / "results.json", folder / "annotations.json"


def best(fn, repeat: int) -> tuple[float, dict]:
    times, out = [], {}
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=SHARED)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    pool, what = captions(a.data)
    with tempfile.TemporaryDirectory() as tmp:
        res, ann = write_files(Path(tmp), pool, a.images)
        shared = ("Bleu", "ROUGE_L", "CIDEr")
        arms = [
            ("score (Java PTB, pycocoevalcap), with METEOR", lambda: score_files(res, ann)),
            ("score (Java PTB, pycocoevalcap), Bleu/ROUGE_L/CIDEr", lambda: score_files(res, ann, shared)),
            (
                "score --fast (PTB in Python, vectorised CIDEr-D)",
                lambda: score_files(res, ann, shared, "ptb-python", True),
            ),  # noqa: E501
        ]
        timed = [(name, *best(fn, a.repeat)) for name, fn in arms]
    print(f"{platform.processor() or platform.machine()}; {a.images} images x 5 references, {what}; best of {a.repeat}")
    print("| command | seconds | BLEU-4 | ROUGE-L | CIDEr-D |\n|---|---|---|---|---|")
    for name, seconds, m in timed:
        print(f"| {name} | {seconds:.1f} | {m['Bleu_4']:.6f} | {m['ROUGE_L']:.6f} | {m['CIDEr']:.6f} |")
    java, fast = timed[1][2], timed[2][2]
    print(f"largest difference, Java vs --fast: {max(abs(java[k] - fast[k]) for k in java):.2e}")


if __name__ == "__main__":
    main()
