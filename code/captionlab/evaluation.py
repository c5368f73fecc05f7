"""Caption a dataset split and score it: shared by per-epoch validation and ``captionlab evaluate``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .captioner import Captioner
from .data.dataset import CaptionDataset, ImageItems, ImageRecord, collate_images
from .metrics import ALL_METRICS, score
from .metrics.coco import write_json


def caption_records(captioner: Captioner, records: Sequence[ImageRecord], beam_size: int, max_len: int,
                    batch_size: int = 64, num_workers: int = 0, progress: bool = True,
                    desc: str = "captioning") -> dict[int, str]:
    """image_id -> caption for every record, decoded in batches."""
    loader = DataLoader(ImageItems(records, captioner.transform), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, collate_fn=collate_images)
    out: dict[int, str] = {}
    was_training = captioner.model.training
    captioner.model.eval()
    try:
        for images, idx in tqdm(loader, desc=desc, unit="batch", leave=False, disable=not progress):
            caps = captioner.words(captioner.caption_tensor(images, beam_size, max_len).tokens)
            out.update({records[int(i)].image_id: c for i, c in zip(idx, caps)})
    finally:
        captioner.model.train(was_training)
    return out


def evaluate_split(captioner: Captioner, dataset: CaptionDataset, split: str = "test", beam_size: int = 3,
                   max_len: int = 20, metrics: Sequence[str] = ALL_METRICS, tokenizer: str = "ptb",
                   batch_size: int = 64, num_workers: int = 0, out_dir: str | Path | None = None,
                   progress: bool = True) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """COCO-format results and corpus metrics; with ``out_dir``, also writes ``results.json``,
    ``annotations.json`` (the references, so ``captionlab score`` can re-check) and ``metrics.json``."""
    records = dataset.split(split)
    captions = caption_records(captioner, records, beam_size, max_len, batch_size, num_workers, progress,
                               desc=f"captioning {split}")
    results = [{"image_id": k, "caption": v} for k, v in captions.items()]
    scores = score(captions, dataset.references(split), metrics, tokenizer)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json(results, out / "results.json")
        write_json(dataset.coco_annotations(split), out / "annotations.json")
        write_json({"split": split, "beam_size": beam_size, "max_len": max_len, "tokenizer": tokenizer,
                    "images": len(results), "metrics": scores}, out / "metrics.json")
    return results, scores


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """A plain-text table, one row per named result (e.g. model or beam size)."""
    keys = [k for k in next(iter(rows.values()))]
    head = "| " + " | ".join(["run", *keys]) + " |"
    sep = "|" + "|".join(["---"] * (len(keys) + 1)) + "|"
    body = ["| " + " | ".join([name, *(f"{r[k]:.3f}" for k in keys)]) + " |" for name, r in rows.items()]
    return "\n".join([head, sep, *body])
