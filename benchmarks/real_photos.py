"""Real photographs: captionlab's captioners on a Karpathy-format folder of captioned photos (Flickr8k)
from frozen ImageNet EfficientNet-Lite0 features, against the same models on a random frozen encoder
and against a blind baseline (the most frequent training caption, for every image).

Usage: python benchmarks/real_photos.py --data ../shared/flickr8k_subset [--split val] [--epochs N]
           [--arms sat,sat_random,cnn_gru,cnn_gru_random] [--figures docs/real_photos] [override ...]

DIR holds dataset_flickr8k.json (or the one *.json named by --annotations) and images/. Each arm is
`captionlab train` of code/configs/flickr8k_show_attend_tell.yaml or flickr8k_cnn_gru.yaml (the
encoder encoded once into the feature cache), then beam 3 on the split, scored with pycocoevalcap
(PTB tokenizer and METEOR: Java). Prints a markdown table (also --out/table.md), the captions of the
split's first photographs (--out/samples.md: text only, the photos stay where they are) and, with
--figures, attention heat-maps of scikit-image's public-domain photographs from the first attention arm.
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
from captionlab.metrics import ALL_METRICS
from captionlab.metrics.coco import KEY_ORDER
from captionlab.metrics.tables import markdown_table
from captionlab.training.trainer import train
from captionlab.viz import attention_plot

CONFIGS = ROOT / "code" / "configs"
RANDOM = ["model.encoder.pretrained=false", "model.encoder.frozen=true"]  # same network, random and fixed
ARMS = {  # name -> (config, encoder label, overrides)
    "sat": ("flickr8k_show_attend_tell.yaml", "efficientnet_lite0 ImageNet", []),
    "sat_random": ("flickr8k_show_attend_tell.yaml", "efficientnet_lite0 random", RANDOM),
    "cnn_gru": ("flickr8k_cnn_gru.yaml", "efficientnet_lite0 ImageNet", []),
    "cnn_gru_random": ("flickr8k_cnn_gru.yaml", "efficientnet_lite0 random", RANDOM),
}
COLUMNS = [k for k in KEY_ORDER if k != "SPICE"]  # SPICE needs Stanford CoreNLP, which is not here
PHOTOS = ("chelsea", "coffee", "astronaut")  # skimage.data: public domain


def data_overrides(data: Path, annotations: str) -> list[str]:
    return [f"data.path={data / annotations}", f"data.image_root={data / 'images'}"]


def run_arm(name: str, a: argparse.Namespace, extra: list[str]) -> tuple[dict, Path]:
    config, label, overrides = ARMS[name]
    out = Path(a.out)
    over = [*data_overrides(Path(a.data), a.annotations), f"train.output_dir={out / 'runs'}"]
    over += [f"train.run_name={name}", "train.tensorboard=false", *overrides, *extra]
    if a.epochs:
        over.append(f"train.epochs={a.epochs}")
    cfg = load_config(CONFIGS / config, over)
    t0 = time.time()
    result = train(cfg, overwrite=True, progress=a.progress)
    wall = time.time() - t0
    epochs = [float(r["train_seconds"]) for r in result.history]
    captioner = load_checkpoint(result.run_dir / "best.pt")
    dataset = load_dataset(cfg.data)
    results, scores = evaluate_split(
        captioner, dataset, a.split, a.beam_size, 20, ALL_METRICS, "ptb", out_dir=out / f"eval_{name}", progress=False
    )
    row = {"label": f"{cfg.model.name}, {label}", **{k: scores[k] for k in COLUMNS}}
    row["s/epoch"] = statistics.median(epochs)
    row["wall s"] = wall
    print(f"{name}: best epoch {result.best_epoch}, val CIDEr-D by epoch "
          + " ".join(f"{float(r['CIDEr']):.3f}" for r in result.history), flush=True)  # fmt: skip
    return {"row": row, "captions": {r["image_id"]: r["caption"] for r in results}}, result.run_dir / "best.pt"


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
    ap.add_argument("--split", default="val")
    ap.add_argument("--epochs", type=int, default=None, help="override every arm's train.epochs")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--beam-size", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "output" / "real_photos"))
    ap.add_argument("--figures", default=None, help="write heat-maps of scikit-image's photographs here")
    ap.add_argument("--samples", type=int, default=6, help="photographs of the split whose captions are listed")
    ap.add_argument("--progress", action="store_true")
    a, extra = ap.parse_known_args()
    data = Path(a.data)
    if not (data / a.annotations).is_file() or not (data / "images").is_dir():
        ap.error(f"--data {data}: expected {a.annotations} and images/ in it")
    arms = [x for x in a.arms.split(",") if x]
    unknown = [x for x in arms if x not in ARMS]
    if unknown:
        ap.error(f"unknown arm(s) {', '.join(unknown)}; choose from {', '.join(ARMS)}")
    Path(a.out).mkdir(parents=True, exist_ok=True)

    dataset = load_dataset(load_config(CONFIGS / ARMS["sat"][0], data_overrides(data, a.annotations)).data)
    blind = most_frequent_caption(dataset.split("train"))
    rows = {"blind: the most frequent training caption": {
        **constant_caption_scores(blind, dataset, a.split), "s/epoch": 0.0, "wall s": 0.0
    }}  # fmt: skip
    captions, checkpoints = {}, {}
    for name in arms:
        done, checkpoints[name] = run_arm(name, a, extra)
        rows[done["row"].pop("label")] = done["row"]
        captions[name] = done["captions"]

    table = markdown_table(rows, "model, encoder", [*COLUMNS, "s/epoch", "wall s"])
    photos = len(dataset.split(a.split))
    head = f"{data.name}, split {a.split} ({photos} photos), beam {a.beam_size}, pycocoevalcap (PTB)"
    print(f"\n{head}\n\n{table}")
    (Path(a.out) / "table.md").write_text(f"{head}\n\n{table}\n")

    samples = [f"blind caption for every image: {blind}", ""]
    for record in dataset.split(a.split)[: a.samples]:
        samples.append(f"{record.path.name} (reference: {record.captions[0]})")
        samples += [f"  {name}: {captions[name][record.image_id]}" for name in arms]
    if a.figures:
        attending = next((n for n in arms if n.startswith("sat")), None)
        if attending:
            samples += ["", *heat_maps(checkpoints[attending], Path(a.figures))]
    (Path(a.out) / "samples.md").write_text("\n".join(samples) + "\n")
    print("\n" + "\n".join(samples))


if __name__ == "__main__":
    main()
