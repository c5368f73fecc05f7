"""Caption a dataset split and score it: shared by per-epoch validation and ``captionlab evaluate``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from . import progress as P
from .captioner import Captioner, load_checkpoint
from .data.dataset import CaptionDataset, FeatureItems, ImageItems, ImageRecord, collate_images
from .data.tokenizers import Tokenizer, scoring_text
from .errors import InputError
from .files import write_json
from .metrics import ALL_METRICS, score
from .metrics.attributes import attribute_accuracy, is_synthetic
from .metrics.grounding import grounding_rate


def caption_records(
    captioner: Captioner,
    records: Sequence[ImageRecord],
    beam_size: int,
    max_len: int,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "captioning",
    with_attention: bool | None = False,
    features: Any = None,
    on_bad_image: str | None = None,
) -> dict[int, Any]:
    """image_id -> caption for every record, decoded in batches (a ``CaptionTrace`` with attention
    for attention models, when ``with_attention``; ``None``: traces where the model attends); from
    ``features``, the records' cached encoder features in order, where given. ``on_bad_image``: skip
    leaves out an image that cannot be read (with a warning naming it), error stops with one line."""
    loader = DataLoader(
        ImageItems(records, captioner.transform, on_bad_image) if features is None else FeatureItems(features),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers if features is None else 0,
        collate_fn=collate_images,
    )
    out: dict[int, str] = {}
    was_training = captioner.model.training
    captioner.model.eval()
    try:
        for images, idx in P.progress(loader, desc=desc, unit="batch", enabled=progress):
            decoded = captioner.caption_tensor(images, beam_size, max_len, features=features is not None)
            traced = with_attention or (with_attention is None and decoded.attention is not None)
            caps = captioner.traces(decoded) if traced else captioner.words(decoded.tokens)
            out.update({records[int(i)].image_id: c for i, c in zip(idx, caps)})
    finally:
        captioner.model.train(was_training)
    return out


def scoring_inputs(
    tokenizer: Tokenizer, captions: dict[Any, str], references: dict[Any, list[str]], metric_tokenizer: str
) -> tuple[dict[Any, str], dict[Any, list[str]], str]:
    """Chinese (a tokenizer that the PTB tokenizer would mangle) is scored on its own tokens joined
    by spaces, as Chinese captioning benchmarks do; English passes through unchanged."""
    if tokenizer.ptb_scoring:  # the scorer's PTB tokenizer gives the tokens the model was trained on
        return captions, references, metric_tokenizer
    join = scoring_text(tokenizer)
    return (
        {k: join(c) for k, c in captions.items()},
        {k: [join(r) for r in v] for k, v in references.items()},
        "simple",
    )


def evaluate_split(
    captioner: Captioner,
    dataset: CaptionDataset,
    split: str = "test",
    beam_size: int = 3,
    max_len: int = 20,
    metrics: Sequence[str] = ALL_METRICS,
    tokenizer: str = "ptb",
    batch_size: int = 64,
    num_workers: int = 0,
    out_dir: str | Path | None = None,
    progress: bool = True,
    grounding: bool = False,
    report: bool = True,
    run: dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """COCO-format results and corpus metrics; with ``out_dir``, also writes ``results.json``,
    ``annotations.json`` (the references, so ``captionlab score`` can re-check) and ``metrics.json``,
    and unless ``report`` is off, ``per_image.json`` and the page ``report.html`` (report.py); ``run``
    (checkpoint, model, ...) goes into metrics.json for the page.
    On the synthetic set the metrics also hold ``attribute_accuracy`` (see metrics/attributes.py) and,
    with ``grounding`` (attention models), ``grounding`` (see metrics/grounding.py)."""
    records = dataset.split(split)
    if grounding and not is_synthetic(records):
        raise InputError("the grounding rate needs object boxes: the synthetic dataset has them")
    if grounding and not captioner.tokenizer.ptb_scoring:
        raise InputError(
            f"the grounding rate reads English object words; this model writes {captioner.config.data.tokenizer} tokens"
        )
    captions = caption_records(
        captioner,
        records,
        beam_size,
        max_len,
        batch_size,
        num_workers,
        progress,
        desc=f"captioning {split}",
        with_attention=True if grounding else None if out_dir is not None and report else False,
        on_bad_image=dataset.on_bad_image,
    )
    traces = {k: t for k, t in captions.items() if not isinstance(t, str)} or None
    if traces is not None:
        captions = {k: t.caption for k, t in traces.items()}
    results = [{"image_id": k, "caption": v} for k, v in captions.items()]
    references = {k: v for k, v in dataset.references(split).items() if k in captions}  # less any skipped
    caps, refs, tokenizer = scoring_inputs(captioner.tokenizer, captions, references, tokenizer)
    scores: dict[str, Any] = score(caps, refs, metrics, tokenizer, per_image=True)
    per_image = scores.pop("per_image")
    english = captioner.tokenizer.ptb_scoring  # the attribute parser and grounding read English words
    if is_synthetic(records) and english:  # the synthesiser's truth lets us say which attributes the model gets right
        scores["attribute_accuracy"] = attribute_accuracy(captions, records)
    if grounding:
        scores["grounding"] = grounding_rate(traces, records)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json(results, out / "results.json")
        write_json(dataset.coco_annotations(split), out / "annotations.json")
        write_json(
            {
                "split": split,
                "beam_size": beam_size,
                "max_len": max_len,
                "tokenizer": tokenizer,
                "images": len(results),
                "metrics": scores,
                **({"run": run} if run else {}),
            },
            out / "metrics.json",
        )
        if report:
            from .report import image_rows, write_report

            rows = image_rows(records, captions, refs, per_image, traces, is_synthetic(records) and english)
            write_json({"split": split, "images": rows}, out / "per_image.json")
            write_report(out)
    return results, scores


def most_frequent_caption(records: Sequence[ImageRecord]) -> str:
    """The blind baseline's one caption for every image: the training caption written most often
    (case, spacing and a final full stop ignored; ties go to the one met first)."""
    counts = Counter(" ".join(c.lower().rstrip(" .").split()) for r in records for c in r.captions)
    if not counts:
        raise InputError("no training captions to count")
    return counts.most_common(1)[0][0]


def constant_caption_scores(
    caption: str,
    dataset: CaptionDataset,
    split: str,
    metrics: Sequence[str] = ALL_METRICS,
    tokenizer: str = "ptb",
) -> dict[str, Any]:
    """What a model that ignores its images scores on ``split`` by writing ``caption`` for each."""
    references = dataset.references(split)
    return score({k: caption for k in references}, references, metrics, tokenizer)


def compare_checkpoints(
    checkpoints: dict[str, str | Path],
    dataset: CaptionDataset,
    split: str = "test",
    beams: Sequence[int] = (3,),
    metrics: Sequence[str] = ALL_METRICS,
    tokenizer: str = "ptb",
    device: str = "auto",
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Every checkpoint at every beam size on the same split with the same metrics: rows for
    ``format_table``, named "<name> beam <k>"."""
    rows: dict[str, dict[str, Any]] = {}
    for name, path in checkpoints.items():
        captioner = load_checkpoint(path, device)
        for beam in beams:
            _, rows[f"{name} beam {beam}"] = evaluate_split(
                captioner, dataset, split, beam, captioner.config.decode.max_len, metrics, tokenizer, progress=progress
            )
    return rows


def run_facts(checkpoints: Sequence[str | Path], config) -> dict[str, str]:
    """What the report page says about the run that was evaluated (metrics.json's ``run``)."""
    import datetime

    m = config.model
    return {
        "name": " + ".join(Path(c).parent.name for c in checkpoints),
        "checkpoint": str(Path(checkpoints[0]).resolve()),
        "model": m.name,
        "config": f"encoder {m.encoder.name}, embed {m.embed_dim}, hidden {m.hidden_dim}, data {config.data.format}",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def evaluate_checkpoint(
    checkpoint: str | Path,
    dataset: CaptionDataset,
    split: str = "test",
    beam_size: int = 3,
    metrics: Sequence[str] = ALL_METRICS,
    progress: bool = False,
) -> tuple[Path, list[dict[str, Any]], dict[str, Any]]:
    """One checkpoint evaluated into ``eval_<split>_beam<k>`` of its run folder, as ``captionlab evaluate``
    writes it (results, metrics, per-image scores, report.html); returns (folder, results, metrics)."""
    captioner = load_checkpoint(checkpoint)
    out = Path(checkpoint).parent / f"eval_{split}_beam{beam_size}"
    results, scores = evaluate_split(
        captioner, dataset, split, beam_size, captioner.config.decode.max_len, metrics, out_dir=out,
        progress=progress, run=run_facts([checkpoint], captioner.config),
    )  # fmt: skip
    return out, results, scores


def compare_in_report(
    a: str | Path,
    b: str | Path,
    dataset: CaptionDataset,
    split: str = "test",
    beam_size: int = 3,
    metrics: Sequence[str] = ALL_METRICS,
    progress: bool = False,
) -> Path:
    """Evaluate checkpoints A and B on one split (``evaluate_checkpoint``) and write the page of B
    against A in B's evaluation folder; returns the page's path."""
    from .report import write_report

    folder_a, folder_b = (evaluate_checkpoint(c, dataset, split, beam_size, metrics, progress)[0] for c in (a, b))
    return write_report(folder_a, folder_b)


def attribute_rows(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """The attribute accuracies of ``compare_checkpoints`` rows (synthetic set), with the first row's
    blind floor, for ``format_attribute_table``."""
    out = {name: m["attribute_accuracy"]["accuracy"] for name, m in rows.items() if "attribute_accuracy" in m}
    first = next((m["attribute_accuracy"] for m in rows.values() if "attribute_accuracy" in m), None)
    if first and first.get("blind_floor"):
        out["blind floor"] = first["blind_floor"]
    return out
