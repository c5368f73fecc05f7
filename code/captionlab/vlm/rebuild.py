"""``captionlab rebuild``: caption every image of a folder or dataset with a vision-language model.

S0 rebuilt its fashion dataset with InstructBLIP one image per call, and S1 made two datasets with
LLaVA, a precise (low temperature) and a creative (high temperature) one. Here images go through the
processor in padded batches, records are appended as they are made (see ``records.py``), a rerun
skips what is done, and under ``torchrun`` each rank captions its share into its own part file,
merged by rank 0 at the end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ..data.images import load_image
from ..errors import InputError, MissingError
from ..files import atomic_write_text
from ..paths import resolve
from ..progress import progress
from ..training import distributed
from .models import VLM, kind_of, load_vlm, memory_advice
from .records import RecordWriter, read_records

PRESETS: dict[str, dict[str, Any]] = {
    "precise": {"do_sample": False, "num_beams": 1},  # greedy: the model's most likely description
    "creative": {"do_sample": True, "temperature": 0.9, "top_p": 0.9},
}
SAMPLING_ONLY = ("temperature", "top_p")
# What makes two runs the same run: a file written under other settings is never continued silently.
IDENTITY = (
    "vlm",
    "model",
    "adapter",
    "dtype",
    "load_in_8bit",
    "prompt",
    "preset",
    "generation",
    "postprocess",
    "images",
    "seed",
)
OLD_HEADER = {"load_in_8bit": False}  # what files written before a key was recorded were made with
ECHOES = ("ASSISTANT:", "Assistant:", "USER:", "Answer:", "Caption:")


@dataclass
class RebuildOptions:
    vlm: str
    model: str
    images: str
    out: str
    prompt: str = "Describe this image in one sentence."
    preset: str = "precise"
    adapter: str | None = None
    batch_size: int = 8
    dtype: str = "auto"
    max_new_tokens: int = 60
    load_in_8bit: bool = False
    device: str = "auto"
    generation: dict[str, Any] = field(default_factory=dict)  # overrides of the preset
    max_sentences: int | None = None
    seed: int = 0
    overwrite: bool = False
    on_bad_image: str = "error"
    progress: bool = True


@dataclass
class Item:
    key: str  # the image's path relative to the source folder: the record key, stable across runs
    path: Path
    image_id: int
    split: str


@dataclass
class RebuildResult:
    out: Path
    images: int  # in the source
    new: int  # captioned by this run (this rank)
    empty: int  # still empty after the retry
    retried: int
    seconds: float


def generation_settings(preset: str, max_new_tokens: int, overrides: dict[str, Any]) -> dict[str, Any]:
    if preset not in PRESETS:
        raise InputError(f"unknown --preset {preset!r}; expected one of {', '.join(PRESETS)}")
    g = {"max_new_tokens": max_new_tokens, **PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    if g.get("temperature") is not None and g["temperature"] <= 0:
        raise InputError(f"--temperature must be > 0 (got {g['temperature']}); for no randomness use --preset precise")
    if g.get("top_p") is not None and not 0 < g["top_p"] <= 1:
        raise InputError(f"--top-p must be in (0, 1] (got {g['top_p']})")
    if g.get("num_beams", 1) < 1 or g["max_new_tokens"] < 1:
        raise InputError("--num-beams and --max-new-tokens must be at least 1")
    if not g["do_sample"]:
        for k in SAMPLING_ONLY:
            g.pop(k, None)
    return g


def source_images(spec: str | Path, on_bad_image: str = "error") -> list[Item]:
    """The images of a folder, or of the dataset a run config's data section names (all splits)."""
    from ..config import DataConfig, load_config
    from ..data.adapters import load_dataset

    p = resolve(spec)
    if p.is_dir():
        data = DataConfig(format="folder", path=str(p))
    elif p.suffix.lower() in (".yaml", ".yml") and p.is_file():
        data = load_config(p).data
    else:
        raise MissingError(f"--images: {p} is neither a folder of images nor a run config (.yaml) naming a dataset")
    ds = load_dataset(dataclasses.replace(data, on_bad_image=on_bad_image))
    keys = image_keys(ds)
    return [Item(k, r.path, r.image_id, r.split) for k, r in zip(keys, ds.records)]


def image_keys(ds: Any) -> list[str]:
    """Each image's path relative to the dataset's folder (a folder source, or the annotation file's)."""
    root = ds.source if ds.source.is_dir() else ds.source.parent
    return [Path(os.path.relpath(r.path, root)).as_posix() for r in ds.records]


def clean_caption(text: str, prompt: str, specials: list[str], max_sentences: int | None = None) -> str:
    """Drop special tokens and echoes of the prompt or a role tag, normalise spaces, keep N sentences."""
    for s in specials:
        text = text.replace(s, " ")
    text = " ".join(text.split())
    echoes = [e for e in (prompt.strip(), *ECHOES) if e]
    while True:
        echo = next((e for e in echoes if text.lower().startswith(e.lower())), None)
        if echo is None:
            break
        text = text[len(echo) :].lstrip(" :")
    if max_sentences:
        text = " ".join(re.split(r"(?<=[.!?])\s+", text)[:max_sentences])
    return text.strip()


def make_header(o: RebuildOptions, generation: dict[str, Any], n_images: int) -> dict[str, Any]:
    import transformers

    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    try:
        import peft

        versions["peft"] = peft.__version__
    except ImportError:
        pass
    return {
        "type": "header",
        "format": "captionlab-rebuild/1",
        "vlm": o.vlm,
        "model": str(resolve(o.model)) if resolve(o.model).exists() else o.model,  # a directory, or a Hub id
        "adapter": str(resolve(o.adapter)) if o.adapter else None,
        "prompt": o.prompt,
        "preset": o.preset,
        "generation": generation,
        "postprocess": {"max_sentences": o.max_sentences},
        "images": str(resolve(o.images)),
        "seed": o.seed,
        "n_images": n_images,
        "dtype": o.dtype,
        "load_in_8bit": o.load_in_8bit,
        "versions": versions,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def check_header(found: dict[str, Any] | None, wanted: dict[str, Any], path: Path) -> None:
    if found is None:
        return

    def there(k: str) -> Any:
        return found.get(k, OLD_HEADER.get(k))

    diff = [k for k in IDENTITY if there(k) != wanted.get(k)]
    if diff:
        what = "; ".join(f"{k}: {there(k)!r} there, {wanted.get(k)!r} now" for k in diff)
        raise InputError(
            f"{path} was written by a different rebuild ({what}). Pass --overwrite to start it again, "
            "or --out another file"
        )


def part_files(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f"{out.name}.part-*"))


def rebuild(o: RebuildOptions) -> RebuildResult:
    kind_of(o.vlm)
    generation = generation_settings(o.preset, o.max_new_tokens, o.generation)
    if o.batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    info, device = distributed.setup(o.device)
    try:
        return _rebuild(o, generation, info, device)
    finally:
        distributed.teardown(info)


def _rebuild(o: RebuildOptions, generation: dict[str, Any], info: distributed.DistInfo, device: Any) -> RebuildResult:
    start = time.perf_counter()
    if not info.is_main:  # rank 0 first: it may have to generate the synthetic set
        distributed.barrier(info)
    items = source_images(o.images, o.on_bad_image)
    header = make_header(o, generation, len(items))
    out = resolve(o.out)
    mine = out if not info.enabled else out.with_name(f"{out.name}.part-{info.rank}-of-{info.world_size}")
    if info.is_main:
        if o.overwrite:
            for f in [out, *part_files(out)]:
                f.unlink(missing_ok=True)
        read_records(out)  # repairs a torn last line once, before any rank reads it
        distributed.barrier(info)
    done: set[str] = set()
    for f in [out, *part_files(out)]:
        found, records = read_records(f, repair=f == mine)
        check_header(found, header, f)
        done |= {r["image"] for r in records}
    todo = [it for it in items[info.rank :: info.world_size] if it.key not in done]
    stats = {"new": 0, "empty": 0, "retried": 0}
    if todo:
        torch.manual_seed(o.seed + info.rank)
        vlm = load_vlm(o.vlm, o.model, device, o.dtype, o.load_in_8bit, o.adapter)
        with RecordWriter(mine, header) as writer:
            caption_items(vlm, todo, o, generation, writer, stats, show=o.progress and info.is_main)
    distributed.barrier(info)
    if info.is_main and part_files(out):
        merge(out, header, items)
    distributed.barrier(info)
    return RebuildResult(out, len(items), stats["new"], stats["empty"], stats["retried"], time.perf_counter() - start)


def caption_items(
    vlm: VLM,
    todo: list[Item],
    o: RebuildOptions,
    generation: dict[str, Any],
    writer: RecordWriter,
    stats: dict[str, int],
    show: bool = True,
) -> None:
    specials = list(vlm.tokenizer.all_special_tokens)
    retry = {**generation, "do_sample": True, "temperature": max(generation.get("temperature", 0.0), 0.7)}
    retry.setdefault("top_p", 0.95)
    bar = progress(total=len(todo), desc=f"rebuild {o.vlm}", unit="img", enabled=show)
    for i in range(0, len(todo), o.batch_size):
        batch = todo[i : i + o.batch_size]
        images = [load_image(it.path) for it in batch]
        raw = _generate(vlm, images, o.prompt, generation, o.batch_size)
        clean = [clean_caption(t, o.prompt, specials, o.max_sentences) for t in raw]
        empty = [j for j, c in enumerate(clean) if not c]
        if empty:  # once more, sampling: a greedy model that said nothing would say nothing again
            again = _generate(vlm, [images[j] for j in empty], o.prompt, retry, o.batch_size)
            for j, t in zip(empty, again):
                raw[j], clean[j] = t, clean_caption(t, o.prompt, specials, o.max_sentences)
        writer.append(
            [
                {"type": "caption", "image": it.key, "image_id": it.image_id, "split": it.split, "caption": c, "raw": r}
                | ({"retried": True} if j in empty else {})
                | ({"empty": True} if not c else {})
                for j, (it, r, c) in enumerate(zip(batch, raw, clean))
            ]
        )
        stats["new"] += len(batch)
        stats["retried"] += len(empty)
        stats["empty"] += sum(not c for c in clean)
        bar.update(len(batch))
    bar.close()


def _generate(vlm: VLM, images: list, prompt: str, generation: dict[str, Any], batch_size: int) -> list[str]:
    with memory_advice(batch_size):
        return vlm.generate(vlm.inputs(images, prompt), **generation)


def merge(out: Path, header: dict[str, Any], items: list[Item]) -> None:
    """Rank 0, after every rank is done: the main file's records plus every part's, once each, in
    source order, written atomically; then the parts go."""
    found, records = read_records(out, repair=False)
    for part in part_files(out):
        records += read_records(part, repair=False)[1]
    order = {it.key: n for n, it in enumerate(items)}
    unique = {r["image"]: r for r in reversed(records)}  # the first record of an image wins
    rows = sorted(unique.values(), key=lambda r: order.get(r["image"], len(order)))
    lines = [json.dumps(r, ensure_ascii=False) for r in [found or header, *rows]]
    atomic_write_text(out, "\n".join(lines) + "\n", "rebuilt captions")
    for part in part_files(out):
        part.unlink()
