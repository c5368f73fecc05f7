"""Real photographs, measured honestly: captionlab's captioners on a Karpathy-format folder of captioned
photos (Flickr8k) from frozen ImageNet EfficientNet-Lite0 features, each trained over several seeds,
best.pt chosen on val and scored on a test split that chose nothing; beside them a nearest-neighbour
lookup that trains nothing (``knn``), a blind caption, and the same models on a random frozen encoder
or given random neighbours.

Usage: python benchmarks/real_photos.py --data ../shared/flickr8k_subset [--arms knn,retrieval_transformer,sat]
           [--seeds 0,1,2] [--carve 150] [--epochs N] [--figures docs/real_photos] [override ...]

DIR holds dataset_flickr8k.json (or the one *.json named by --annotations) and images/. Where the JSON
has a test split (full Flickr8k's Karpathy JSON does), that is the test split; where it has none (the
shared subset), --carve training photos (seeded by --carve-seed) become it (``data.carve_test``), so
the table never reports the split that chose a checkpoint. Each trained arm is `captionlab train` of
its config (the encoder encoded once into the feature cache, which every arm and knn share), then
beam 3 on the test split, scored with pycocoevalcap (PTB tokenizer and METEOR: Java). Prints a
markdown table, mean and spread (sample standard deviation) over the seeds, with the seconds per epoch
and per run on this machine (also --out/table.md), and the captions of the split's first photographs
(--out/samples.md: text only, the photos stay where they are).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "code"))

from captionlab.captioner import load_checkpoint
from captionlab.config import load_config
from captionlab.data import load_dataset
from captionlab.evaluation import constant_caption_scores, evaluate_split, most_frequent_caption
from captionlab.knn import DEFAULT_K, knn_captions
from captionlab.metrics import ALL_METRICS, score
from captionlab.metrics.coco import KEY_ORDER
from captionlab.training.trainer import train
from captionlab.viz import attention_plot

CONFIGS = ROOT / "code" / "configs"
RANDOM = ["model.encoder.pretrained=false", "model.encoder.frozen=true"]  # same network, random and fixed
RETRIEVAL = "flickr8k_retrieval_transformer.yaml"
SAT = "flickr8k_show_attend_tell.yaml"
ARMS = {  # name -> (config, label, overrides); knn and blind train nothing
    "knn": (RETRIEVAL, f"knn consensus (k={DEFAULT_K}), trains nothing", []),
    "retrieval_transformer": (RETRIEVAL, "retrieval_transformer", []),
    "retrieval_random": (RETRIEVAL, "retrieval_transformer given random neighbours", ["model.retrieval=random"]),
    "retrieval_copy": (RETRIEVAL, "retrieval_transformer with the copy head", ["model.retrieval_copy=true"]),
    "sat": (SAT, "show_attend_tell", []),
    "sat_random": (SAT, "show_attend_tell, random frozen encoder", RANDOM),
    "cnn_gru": ("flickr8k_cnn_gru.yaml", "cnn_gru", []),
    "cnn_gru_random": ("flickr8k_cnn_gru.yaml", "cnn_gru, random frozen encoder", RANDOM),
    "blind": (SAT, "blind: the most frequent training caption", []),
}
COLUMNS = [k for k in KEY_ORDER if k != "SPICE"]  # SPICE needs Stanford CoreNLP, which is not here
PHOTOS = ("chelsea", "coffee", "astronaut")  # skimage.data: public domain


def data_overrides(a: argparse.Namespace, carve: int) -> list[str]:
    data = Path(a.data)
    over = [f"data.path={data / a.annotations}", f"data.image_root={data / 'images'}"]
    return over + ([f"data.carve_test={carve}", f"data.split_seed={a.carve_seed}"] if carve else [])


def config(name: str, a: argparse.Namespace, carve: int, seed: int, extra: list[str]):
    file, _, overrides = ARMS[name]
    over = [*data_overrides(a, carve), f"train.output_dir={Path(a.out) / 'runs'}", f"train.seed={seed}"]
    over.append(f"train.cache_dir={Path(a.out) / 'cache'}")
    over += [f"train.run_name={name}_seed{seed}", "train.tensorboard=false", *overrides, *extra]
    return load_config(CONFIGS / file, over + ([f"train.epochs={a.epochs}"] if a.epochs else []))


def trained_arm(name: str, seed: int, a: argparse.Namespace, carve: int, extra: list[str]) -> dict:
    cfg = config(name, a, carve, seed, extra)
    t0 = time.time()
    result = train(cfg, overwrite=True, progress=a.progress)
    wall = time.time() - t0
    captioner = load_checkpoint(result.run_dir / "best.pt")
    results, scores = evaluate_split(
        captioner, load_dataset(cfg.data), "test", a.beam_size, 20, ALL_METRICS, "ptb",
        out_dir=Path(a.out) / f"eval_{name}_seed{seed}", progress=False,
    )  # fmt: skip
    print(f"{name} seed {seed}: best epoch {result.best_epoch}, val CIDEr-D by epoch "
          + " ".join(f"{float(r['CIDEr']):.3f}" for r in result.history)
          + f"; test CIDEr {scores['CIDEr']:.3f}", flush=True)  # fmt: skip
    epochs = [float(r["train_seconds"]) for r in result.history]
    captions = {r["image_id"]: r["caption"] for r in results}
    return {**scores, "s/epoch": statistics.median(epochs), "wall s": wall, "captions": captions,
            "best": result.run_dir / "best.pt"}  # fmt: skip


def untrained_arm(name: str, a: argparse.Namespace, carve: int, dataset) -> dict:
    t0 = time.time()
    refs = dataset.references("test")
    if name == "knn":
        cfg = config(name, a, carve, 0, [])
        captions = knn_captions(cfg, dataset, "test", Path(a.out) / "cache", a.k)
        scores = score(captions, refs, ALL_METRICS, "ptb")
    else:
        blind = most_frequent_caption(dataset.split("train"))
        captions, scores = {k: blind for k in refs}, constant_caption_scores(blind, dataset, "test")
    return {**scores, "s/epoch": 0.0, "wall s": time.time() - t0, "captions": captions}


def summary(runs: list[dict]) -> dict[str, str]:
    """Mean and sample standard deviation over the seeds of every column."""
    out = {}
    for k in [*COLUMNS, "s/epoch", "wall s"]:
        vals = [float(r[k]) for r in runs]
        spread = statistics.stdev(vals) if len(vals) > 1 else 0.0
        out[k] = f"{statistics.mean(vals):.0f}" if k in ("s/epoch", "wall s") else f"{statistics.mean(vals):.3f}"
        out[k] += f" ± {spread:.{0 if k in ('s/epoch', 'wall s') else 3}f}" if len(vals) > 1 else ""
    out["distinct"] = f"{statistics.mean(len(set(r['captions'].values())) for r in runs):.0f}"
    return out


def table(rows: dict[str, dict[str, str]], seeds: dict[str, int]) -> str:
    keys = [*COLUMNS, "distinct", "s/epoch", "wall s"]
    lines = ["| arm | seeds | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 2)]
    lines += [f"| {n} | {seeds[n]} | " + " | ".join(r[k] for k in keys) + " |" for n, r in rows.items()]
    return "\n".join(lines)


def heat_maps(checkpoint: Path, figures: Path) -> list[str]:
    from PIL import Image
    from skimage import data as skdata

    figures.mkdir(parents=True, exist_ok=True)
    captioner = load_checkpoint(checkpoint, device="cpu")
    lines = []
    for name in PHOTOS:
        image = Image.fromarray(getattr(skdata, name)()).convert("RGB")
        trace = captioner.caption(image, with_attention=True)[0]
        side = captioner.config.data.image_size
        attention_plot(image, trace.words, trace.attention, side, out=figures / f"{name}.jpg")
        lines.append(f"skimage.data.{name}(): {trace.caption}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder with the Karpathy JSON and images/")
    ap.add_argument("--annotations", default="dataset_flickr8k.json")
    ap.add_argument("--carve", type=int, default=150, help="training photos that become the test split, if none")
    ap.add_argument("--carve-seed", type=int, default=0)
    ap.add_argument("--seeds", default="0,1,2", help="train.seed of each trained arm's runs")
    ap.add_argument("--epochs", type=int, default=None, help="override every arm's train.epochs")
    ap.add_argument("--arms", default="knn,retrieval_transformer,sat,blind", help=f"from {', '.join(ARMS)}")
    ap.add_argument("--k", type=int, default=DEFAULT_K, help="knn: neighbours whose captions vote")
    ap.add_argument("--beam-size", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "output" / "real_photos"))
    ap.add_argument("--figures", default=None, help="write heat-maps of scikit-image's photographs here")
    ap.add_argument("--samples", type=int, default=6, help="test photographs whose captions are listed")
    ap.add_argument("--progress", action="store_true")
    a, extra = ap.parse_known_args()
    data = Path(a.data)
    if not (data / a.annotations).is_file() or not (data / "images").is_dir():
        ap.error(f"--data {data}: expected {a.annotations} and images/ in it")
    arms = [x for x in a.arms.split(",") if x]
    unknown = [x for x in arms if x not in ARMS]
    if unknown:
        ap.error(f"unknown arm(s) {', '.join(unknown)}; choose from {', '.join(ARMS)}")
    seeds = [int(s) for s in a.seeds.split(",") if s]
    Path(a.out).mkdir(parents=True, exist_ok=True)

    plain = load_dataset(load_config(CONFIGS / SAT, data_overrides(a, 0)).data)
    carve = 0 if "test" in plain.splits() else a.carve
    dataset = load_dataset(load_config(CONFIGS / SAT, data_overrides(a, carve)).data)
    rows, runs_of, n_seeds = {}, {}, {}
    for name in arms:
        trained = name not in ("knn", "blind")
        runs = (
            [trained_arm(name, s, a, carve, extra) for s in seeds]
            if trained
            else [untrained_arm(name, a, carve, dataset)]
        )
        runs_of[name], n_seeds[name] = runs, len(runs) if trained else 0
        rows[ARMS[name][1]] = summary(runs)
        n_seeds[ARMS[name][1]] = n_seeds.pop(name)

    split = dataset.splits()
    how = f"carved: {carve} training photos, seed {a.carve_seed}" if carve else "the data's own test split"
    head = (f"{data.name}: train {split['train']}, val {split.get('val', 0)} (chooses best.pt), test {split['test']} "
            f"({how}); beam {a.beam_size}, pycocoevalcap (PTB); mean ± sample std over seeds {a.seeds}")  # fmt: skip
    text = table(rows, n_seeds)
    print(f"\n{head}\n\n{text}")
    (Path(a.out) / "table.md").write_text(f"{head}\n\n{text}\n")

    samples = []
    for record in dataset.split("test")[: a.samples]:
        samples.append(f"{record.path.name} (reference: {record.captions[0]})")
        samples += [f"  {name}: {runs_of[name][0]['captions'][record.image_id]}" for name in arms]
    attending = next((n for n in arms if n.startswith(("sat", "retrieval")) and n in runs_of), None)
    if a.figures and attending:
        samples += ["", *heat_maps(runs_of[attending][0]["best"], Path(a.figures))]
    (Path(a.out) / "samples.md").write_text("\n".join(samples) + "\n")
    print("\n" + "\n".join(samples))


if __name__ == "__main__":
    main()
