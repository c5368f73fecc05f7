"""Real photographs, measured honestly: every captionlab family that captions, on a Karpathy-format
folder of captioned photos (Flickr8k) from frozen ImageNet EfficientNet-Lite0 features, each trained
over several seeds, best.pt chosen on val and scored on a test split that chose nothing; beside them a
nearest-neighbour lookup that trains nothing (``knn``), a blind caption, and (arms ``*_random``) the
same models on a random frozen encoder or given random neighbours. SCST fine-tunes the ``sat`` run of
the same seed (``sat_scst``) and the ``retrieval_transformer`` one (``retrieval_scst``); clip_gpt and
ClipCap start from ``flickr8k_pretrain.yaml``'s run of the same seed (its retrieval recall on the test
split is printed under the table); ClipCap's GPT-2 is trained on the training captions once
(real_photo_arms.py says how each arm is made).

Usage: python benchmarks/real_photos.py --data ../shared/flickr8k_subset [--arms knn,sat,sat_scst,...]
           [--seeds 0,1,2] [--carve 150] [--epochs N] [--fresh] [--figures docs/real_photos] [override ...]

DIR holds dataset_flickr8k.json (or the one *.json named by --annotations) and images/. Where the JSON
has a test split (full Flickr8k's Karpathy JSON does), that is the test split; where it has none (the
shared subset), --carve training photos (seeded by --carve-seed) become it (``data.carve_test``), so
the table never reports the split that chose a checkpoint. Each trained arm is `captionlab train` of
its config (the encoder encoded once into the feature cache, which every arm and knn share), then
beam 3 on the test split, scored with pycocoevalcap (PTB tokenizer and METEOR: Java). Prints a
markdown table, mean and spread (sample standard deviation) over the seeds, with the seconds per epoch
and per run on this machine (also --out/table.md), and the captions of the split's first photographs
(--out/samples.md: text only, the photos stay where they are). A run already finished with the same
config is read back, not trained again (--fresh: train everything).
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
from captionlab.knn import DEFAULT_K
from captionlab.metrics.coco import KEY_ORDER
from captionlab.viz import attention_plot
from real_photo_arms import ARMS, CONFIGS, SAT, UNTRAINED, data_overrides, run_arm, untrained_arm

COLUMNS = [k for k in KEY_ORDER if k != "SPICE"]  # SPICE needs Stanford CoreNLP, which is not here
PHOTOS = ("chelsea", "coffee", "astronaut")  # skimage.data: public domain
DEFAULT_ARMS = (  # the cheaper first: a table cut short has them
    "knn,cnn_gru,show_tell,sat,sat_scst,clipcap,adaptive,vit_transformer,clip_gpt_scratch,clip_gpt,retrieval_transformer,"
    "retrieval_scst,blind"
)


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


def recall_line(runs: list[dict]) -> str:
    """flickr8k_pretrain's retrieval recall on the test split, mean over the seeds."""
    keys = sorted(runs[0]["recall"])
    mean = {k: statistics.mean(float(r["recall"][k]) for r in runs) for k in keys}
    seconds = statistics.mean(float(r["pretrain s"]) for r in runs)
    lm = next((f"; clipcap's GPT-2 (once for every seed): {r['gpt2 s']:.0f} s" for r in runs if "gpt2 s" in r), "")
    return (f"flickr8k_pretrain.yaml (the towers clip_gpt and clipcap start from; not in their wall s): "
            f"{seconds:.0f} s a run{lm}. Its retrieval recall on the test split, mean of {len(runs)} seed(s): "
            + ", ".join(f"{k} {v:.3f}" for k, v in mean.items()))  # fmt: skip


def parse(ap: argparse.ArgumentParser) -> tuple[argparse.Namespace, list[str]]:
    ap.add_argument("--data", required=True, help="folder with the Karpathy JSON and images/")
    ap.add_argument("--annotations", default="dataset_flickr8k.json")
    ap.add_argument("--carve", type=int, default=150, help="training photos that become the test split, if none")
    ap.add_argument("--carve-seed", type=int, default=0)
    ap.add_argument("--seeds", default="0,1,2", help="train.seed of each trained arm's runs")
    ap.add_argument("--epochs", type=int, default=None, help="override every arm's train.epochs")
    ap.add_argument("--arms", default=DEFAULT_ARMS, help=f"from {', '.join(ARMS)}")
    ap.add_argument("--k", type=int, default=DEFAULT_K, help="knn: neighbours whose captions vote")
    ap.add_argument("--beam-size", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "output" / "real_photos"))
    ap.add_argument("--fresh", action="store_true", help="train every run again, even one finished before")
    ap.add_argument("--finished", action="store_true", help="train nothing: the table of the runs finished so far")
    ap.add_argument("--figures", default=None, help="write heat-maps of scikit-image's photographs here")
    ap.add_argument("--samples", type=int, default=6, help="test photographs whose captions are listed")
    ap.add_argument("--progress", action="store_true")
    a, extra = ap.parse_known_args()
    data = Path(a.data)
    if not (data / a.annotations).is_file() or not (data / "images").is_dir():
        ap.error(f"--data {data}: expected {a.annotations} and images/ in it")
    unknown = [x for x in a.arms.split(",") if x and x not in ARMS]
    if unknown:
        ap.error(f"unknown arm(s) {', '.join(unknown)}; choose from {', '.join(ARMS)}")
    return a, extra


def main() -> None:
    a, extra = parse(argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    t0 = time.time()
    arms = [x for x in a.arms.split(",") if x]
    seeds = [int(s) for s in a.seeds.split(",") if s]
    Path(a.out).mkdir(parents=True, exist_ok=True)
    data = Path(a.data)
    plain = load_dataset(load_config(CONFIGS / SAT, data_overrides(a, 0)).data)
    carve = 0 if "test" in plain.splits() else a.carve
    dataset = load_dataset(load_config(CONFIGS / SAT, data_overrides(a, carve)).data)
    runs_of: dict[str, list[dict]] = {n: [] for n in arms}
    for seed in seeds:  # every arm's first seed, then every arm's second: a cut-short table has every arm
        for name in (n for n in arms if n not in UNTRAINED):
            done = run_arm(name, seed, a, carve, extra)
            runs_of[name] += [done[0]] if done else []
    for name in (n for n in arms if n in UNTRAINED):
        runs_of[name] = [untrained_arm(name, a, carve, dataset)]
    runs_of = {n: runs_of[n] for n in arms if runs_of[n]}
    rows = {ARMS[n].label: summary(r) for n, r in runs_of.items()}
    n_seeds = {ARMS[n].label: 0 if n in UNTRAINED else len(r) for n, r in runs_of.items()}

    split = dataset.splits()
    how = f"carved: {carve} training photos, seed {a.carve_seed}" if carve else "the data's own test split"
    head = (f"{data.name}: train {split['train']}, val {split.get('val', 0)} (chooses best.pt), test {split['test']} "
            f"({how}); beam {a.beam_size}, pycocoevalcap (PTB); mean ± sample std over seeds {a.seeds}")  # fmt: skip
    text = table(rows, n_seeds)
    by_seed = {
        r["config"]["train"]["seed"]: r for n in ("clip_gpt", "clipcap") for r in runs_of.get(n, []) if "recall" in r
    }
    towers = list(by_seed.values())  # one pre-training run a seed (clipcap's record also has the GPT-2 time)
    if towers:  # one pre-training run a seed, shared by both arms
        text += "\n\n" + recall_line(towers)
    print(f"\n{head}\n\n{text}")
    (Path(a.out) / "table.md").write_text(f"{head}\n\n{text}\n")

    samples = []
    for record in dataset.split("test")[: a.samples]:
        samples.append(f"{record.path.name} (reference: {record.captions[0]})")
        samples += [f"  {name}: {runs[0]['captions'][str(record.image_id)]}" for name, runs in runs_of.items()]
    attending = next((n for n in arms if n.startswith(("sat", "retrieval")) and n in runs_of), None)
    if a.figures and attending:
        samples += ["", *heat_maps(Path(runs_of[attending][0]["best"]), Path(a.figures))]
    (Path(a.out) / "samples.md").write_text("\n".join(samples) + "\n")
    print("\n" + "\n".join(samples))
    print(f"\nthe whole command: {time.time() - t0:.0f} s on this machine (runs read back cost nothing)")


if __name__ == "__main__":
    main()
