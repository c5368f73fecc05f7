"""The arms of ``real_photos.py``: which config each trains, what it needs first (SCST the
cross-entropy run it fine-tunes, clip_gpt and ClipCap the contrastive pre-training, ClipCap its GPT-2),
and one run of an arm, trained and scored on the test split.

A finished run leaves ``eval_<arm>_seed<s>/bench.json`` (its config, scores, captions and times); a
later invocation whose arm would train the very same config reads it instead of training again, so an
interrupted table resumes where it stopped and one arm can be added without re-running the rest
(``--fresh`` trains everything again).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from captionlab.captioner import load_checkpoint, load_dual_encoder
from captionlab.config import RunConfig, load_config
from captionlab.data import load_dataset
from captionlab.evaluation import constant_caption_scores, evaluate_split, most_frequent_caption
from captionlab.knn import DEFAULT_K, knn_captions
from captionlab.metrics import ALL_METRICS, score
from captionlab.models.tiny_hf import write_tiny_models
from captionlab.retrieval import retrieval_recall
from captionlab.runlog import read_log
from captionlab.training.trainer import train

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "code" / "configs"
RANDOM = ["model.encoder.pretrained=false", "model.encoder.frozen=true"]  # same network, random and fixed
RETRIEVAL = "flickr8k_retrieval_transformer.yaml"
SAT = "flickr8k_show_attend_tell.yaml"
PRETRAIN = "flickr8k_pretrain.yaml"
LM = dict(hidden=256, layers=2, lm_steps=400, vocab_size=3000)  # flickr8k_clipcap.yaml's GPT-2: its tiny-hf command


@dataclass(frozen=True)
class Arm:
    config: str
    label: str
    overrides: tuple[str, ...] = ()
    needs: str | None = None  # a trained arm: SCST starts from its best.pt; "pretrain": the towers
    same_as: str | None = None  # an arm whose runs are this one's (the same model, config and seed)


ARMS = {  # knn and blind train nothing
    "knn": Arm(RETRIEVAL, f"knn consensus (k={DEFAULT_K}), trains nothing"),
    "cnn_gru": Arm("flickr8k_cnn_gru.yaml", "cnn_gru"),
    "show_tell": Arm("flickr8k_show_tell.yaml", "show_tell"),
    "sat": Arm(SAT, "show_attend_tell"),
    "adaptive": Arm("flickr8k_adaptive_attention.yaml", "adaptive_attention"),
    "vit_transformer": Arm("flickr8k_vit_transformer.yaml", "vit_transformer (Lite0 grid, Transformer decoder)"),
    "retrieval_transformer": Arm(RETRIEVAL, "retrieval_transformer"),
    "clip_gpt": Arm("flickr8k_clip_gpt.yaml", "clip_gpt from flickr8k_pretrain's text tower", needs="pretrain"),
    "clip_gpt_scratch": Arm(  # clip_gpt.yaml with pretrained_from=null is vit_transformer.yaml: one training, not two
        "flickr8k_vit_transformer.yaml", "clip_gpt from random weights (= vit_transformer)", same_as="vit_transformer"
    ),
    "clipcap": Arm(
        "flickr8k_clipcap.yaml", "clipcap (pretrain's image tower, GPT-2 of the captions)", needs="pretrain"
    ),
    "sat_scst": Arm("flickr8k_scst.yaml", "show_attend_tell + SCST (from sat's best.pt)", needs="sat"),
    "retrieval_scst": Arm(  # SCST on the best cross-entropy model (the steadiest of the three at 0.415)
        "flickr8k_scst.yaml", "retrieval_transformer + SCST (from its best.pt)", needs="retrieval_transformer"
    ),
    "blind": Arm(SAT, "blind: the most frequent training caption"),
    "sat_random": Arm(SAT, "show_attend_tell, random frozen encoder", tuple(RANDOM)),
    "cnn_gru_random": Arm("flickr8k_cnn_gru.yaml", "cnn_gru, random frozen encoder", tuple(RANDOM)),
    "retrieval_random": Arm(RETRIEVAL, "retrieval_transformer given random neighbours", ("model.retrieval=random",)),
    "retrieval_copy": Arm(RETRIEVAL, "retrieval_transformer with the copy head", ("model.retrieval_copy=true",)),
}
UNTRAINED = ("knn", "blind")


def data_overrides(a: argparse.Namespace, carve: int) -> list[str]:
    data = Path(a.data)
    over = [f"data.path={data / a.annotations}", f"data.image_root={data / 'images'}"]
    return over + ([f"data.carve_test={carve}", f"data.split_seed={a.carve_seed}"] if carve else [])


def config(file: str, run: str, a: argparse.Namespace, carve: int, seed: int, extra: list[str]) -> RunConfig:
    over = [*data_overrides(a, carve), f"train.output_dir={Path(a.out) / 'runs'}", f"train.seed={seed}"]
    over += [f"train.cache_dir={Path(a.out) / 'cache'}", f"train.run_name={run}", "train.tensorboard=false", *extra]
    return load_config(CONFIGS / file, over + ([f"train.epochs={a.epochs}"] if a.epochs else []))


def reused(path: Path, cfg: RunConfig, fresh: bool) -> dict | None:
    """A finished run's record where it trained this very config (keys added since at their defaults) and
    its best.pt is still there, else None."""
    if fresh or not path.is_file():
        return None
    record = json.loads(path.read_text())
    # read with today's defaults, as finished_run reads config.yaml: a key added since changes nothing it ran
    same = "config" in record and RunConfig.from_dict(record["config"]).to_dict() == cfg.to_dict()
    return record if same and Path(record["best"]).is_file() else None


def trained_epochs(history: list[dict]) -> list[dict]:
    """log.csv's rows of trained epochs: not epoch 0, a train.init_from run's validated start."""
    return [r for r in history if float(r["epoch"]) >= 1]


def seconds_an_epoch(history: list[dict]) -> float:
    """The median training seconds of an epoch (validation excluded)."""
    return statistics.median(float(r["train_seconds"]) for r in trained_epochs(history))


def finished_run(cfg: RunConfig) -> dict | None:
    """A run folder this config would write, finished before records were kept (bench.json): reused where
    its config.yaml, read with today's defaults, is this config and log.csv has every epoch."""
    run = Path(cfg.train.output_dir) / cfg.train.run_name
    if not (run / "best.pt").is_file() or not (run / "log.csv").is_file() or not (run / "config.yaml").is_file():
        return None
    theirs, ours = load_config(run / "config.yaml").to_dict(), cfg.to_dict()
    for d in (theirs, ours):  # where the features were cached changes nothing a run learns
        d["train"].pop("cache_dir")
    if theirs != ours:
        return None
    history = read_log(run / "log.csv")
    if len(trained_epochs(history)) != cfg.train.epochs:
        return None
    return {
        "config": cfg.to_dict(),
        "wall s": sum(r["seconds"] for r in history),  # its epochs with validation, from its log
        "s/epoch": seconds_an_epoch(history),
        "best": str(run / "best.pt"),
        "history": history,
    }


class NotFinished(Exception):
    """--finished trains nothing: a run it needs has not finished under today's config."""


def trained(cfg: RunConfig, a: argparse.Namespace, record: Path) -> tuple[dict, Path]:
    """Train ``cfg`` (or read its record) -> (record, best.pt); the record holds the times."""
    old = reused(record, cfg, a.fresh) or (None if a.fresh else finished_run(cfg))
    if old is not None:
        print(f"{cfg.train.run_name}: reusing {old['best']} (the same config trained it)", flush=True)
        return old, Path(old["best"])
    if a.finished:
        raise NotFinished(cfg.train.run_name)
    t0 = time.time()
    result = train(cfg, overwrite=True, progress=a.progress)
    out = {
        "config": cfg.to_dict(),
        "wall s": time.time() - t0,
        "s/epoch": seconds_an_epoch(result.history),
        "best": str(result.run_dir / "best.pt"),
        "history": [{k: float(v) for k, v in r.items() if _number(v)} for r in result.history],
    }
    return out, result.run_dir / "best.pt"


def _number(v: object) -> bool:
    try:
        float(v)  # type: ignore[arg-type]
        return True
    except (TypeError, ValueError):
        return False


def pretrained_towers(seed: int, a: argparse.Namespace, carve: int) -> tuple[Path, dict]:
    """flickr8k_pretrain.yaml's run of this seed, with its retrieval recall on the test split."""
    cfg = config(PRETRAIN, f"pretrain_seed{seed}", a, carve, seed, [])
    path = Path(a.out) / f"eval_pretrain_seed{seed}" / "bench.json"
    record, best = trained(cfg, a, path)
    if "recall" not in record:
        dual = load_dual_encoder(best, "cpu")
        record["recall"] = retrieval_recall(dual, load_dataset(cfg.data).split("test"), 64, cfg.data.max_caption_len)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1))
    return best, record


def language_model(a: argparse.Namespace, carve: int) -> tuple[Path, float]:
    """flickr8k_clipcap.yaml's GPT-2, trained on the training captions once for every seed."""
    lm = Path(a.out) / "gpt2"
    stamp = lm / "made_in_seconds.txt"
    if stamp.is_file() and not a.fresh:
        return lm, float(stamp.read_text())
    if a.finished:
        raise NotFinished("gpt2")
    t0 = time.time()
    cfg = config("flickr8k_clipcap.yaml", "gpt2", a, carve, 0, [f"model.lm={lm}"])
    write_tiny_models(cfg, overwrite=True, **LM)
    stamp.write_text(f"{time.time() - t0:.1f}")
    return lm, float(stamp.read_text())


def prerequisites(name: str, seed: int, a: argparse.Namespace, carve: int, extra: list[str]) -> tuple[list, dict]:
    """Overrides that point an arm at what it starts from, and what that cost (seconds, recall)."""
    need = ARMS[name].needs
    if need in ARMS:
        start = run_arm(need, seed, a, carve, extra)
        if start is None:
            raise NotFinished(need)
        return [f"train.init_from={start[1]}"], {}
    if need == "pretrain":
        towers, record = pretrained_towers(seed, a, carve)
        over, info = [f"model.pretrained_from={towers}"], {"pretrain s": record["wall s"], "recall": record["recall"]}
        if name == "clipcap":
            lm, seconds = language_model(a, carve)
            over.append(f"model.lm={lm}")
            info["gpt2 s"] = seconds
        return over, info
    return [], {}


def run_arm(name: str, seed: int, a: argparse.Namespace, carve: int, extra: list[str]) -> tuple[dict, Path] | None:
    """One seed of a trained arm: its scores on the test split, captions and times, and its best.pt
    (None with ``--finished`` where that run has not finished)."""
    arm = ARMS[name]
    if arm.same_as:
        return run_arm(arm.same_as, seed, a, carve, extra)
    if a.finished and not finished(name, seed, a):
        return None
    try:
        before, info = prerequisites(name, seed, a, carve, extra)
        return _scored(name, seed, a, carve, [*before, *ARMS[name].overrides, *extra], info)
    except NotFinished:
        return None


def _scored(name: str, seed: int, a: argparse.Namespace, carve: int, over: list[str], info: dict) -> tuple[dict, Path]:
    """Train (or read back) one run of an arm and score its best.pt on the test split, once."""
    cfg = config(ARMS[name].config, f"{name}_seed{seed}", a, carve, seed, over)
    out_dir = Path(a.out) / f"eval_{name}_seed{seed}"
    record, best = trained(cfg, a, out_dir / "bench.json")
    if "CIDEr" not in record:
        results, scores = evaluate_split(
            load_checkpoint(best), load_dataset(cfg.data), "test", a.beam_size, 20, ALL_METRICS, "ptb",
            out_dir=out_dir, progress=False,
        )  # fmt: skip
        record |= {**scores, "captions": {str(r["image_id"]): r["caption"] for r in results}}
        (out_dir / "bench.json").write_text(json.dumps(record, indent=1))
        curve = " ".join(f"{r.get('CIDEr', float('nan')):.3f}" for r in record["history"])
        print(f"{name} seed {seed}: val CIDEr-D by epoch {curve}; test CIDEr {scores['CIDEr']:.3f}", flush=True)
    return {**record, **info}, best


def finished(name: str, seed: int, a: argparse.Namespace) -> bool:
    """Whether this arm's run of this seed was scored (its bench.json holds test scores)."""
    path = Path(a.out) / f"eval_{name}_seed{seed}" / "bench.json"
    return path.is_file() and "CIDEr" in json.loads(path.read_text())


def untrained_arm(name: str, a: argparse.Namespace, carve: int, dataset) -> dict:
    t0 = time.time()
    refs = dataset.references("test")
    if name == "knn":
        cfg = config(ARMS[name].config, "knn", a, carve, 0, [])
        captions = knn_captions(cfg, dataset, "test", Path(a.out) / "cache", a.k)
        scores = score(captions, refs, ALL_METRICS, "ptb")
    else:
        blind = most_frequent_caption(dataset.split("train"))
        captions, scores = {k: blind for k in refs}, constant_caption_scores(blind, dataset, "test")
    return {**scores, "s/epoch": 0.0, "wall s": time.time() - t0, "captions": {str(k): v for k, v in captions.items()}}
