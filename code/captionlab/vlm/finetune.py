"""``captionlab vlm-finetune``: LoRA adapters (peft) that teach a VLM a dataset's caption style (S1 4.2.2).

S1 tuned LLaVA with one fixed question, "Please describe this image in deepfashion dataset style.",
so that the question alone steers the model to the dataset's language. The loss counts the answer
tokens only: the image and prompt positions are labelled -100. The vision-to-language projector is
trained in full beside the adapters (as LLaVA's own recipe trains it), and saved with them.

Like ``captionlab train``, a run resumes exactly (``--resume``): every save (each epoch's end, every
``--save-every-steps`` steps, and on SIGTERM/Ctrl-C, which stop after the current step) writes
``trainer_state.pt`` beside the adapter: the trainable weights, the optimiser, the steps done in the
epoch, the generator that draws the epoch's order (as it was before that draw) and torch's generator
(LoRA's dropout), so the resumed run takes the steps an uninterrupted one would have taken.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..data.images import load_image
from ..errors import ExistsError, InputError, MissingError
from ..optim import optimizer_step
from ..paths import resolve
from ..progress import progress
from ..training.distributed import setup
from ..training.resume import StopSignals, TrainingStopped, as_tuples
from .models import VLM, load_vlm, memory_advice, quiet_peft

STYLE_PROMPT = "Please describe this image in deepfashion dataset style."  # S1's fixed question


@dataclass
class FinetuneOptions:
    vlm: str
    model: str
    data: str  # run config whose data section names the dataset; its train split is used
    out: str
    prompt: str = STYLE_PROMPT
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 8
    lr: float = 2e-4
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    dtype: str = "auto"
    device: str = "auto"
    seed: int = 0
    progress: bool = True
    resume: bool = False  # continue the run in ``out`` from its trainer_state.pt
    save_every_steps: int = 0  # also save inside an epoch (0: at each epoch's end and on a stop signal only)


@dataclass
class FinetuneResult:
    out: Path
    steps: int
    losses: list[float]
    seconds: float


def lora_config(vlm: VLM, o: FinetuneOptions) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=o.lora_r,
        lora_alpha=o.lora_alpha,
        lora_dropout=o.lora_dropout,
        target_modules=r".*language_model.*\.(q_proj|v_proj)",  # the LLM's attention, not the vision tower's
        modules_to_save=[vlm.kind.projector],
    )


def training_batch(vlm: VLM, prompt_ids: list[int], images: list, answers: list[str], extra: dict) -> dict:
    """Prompt (image placeholders included) + answer + end-of-text, right-padded; labels on the answer only."""
    seqs = [(prompt_ids, vlm.answer_ids(a)) for a in answers]
    width = max(len(p) + len(a) for p, a in seqs)
    pad = vlm.tokenizer.pad_token_id
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)  # (B, T)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, (p, a) in enumerate(seqs):
        ids[i, : len(p) + len(a)] = torch.tensor(p + a)
        mask[i, : len(p) + len(a)] = 1
        labels[i, len(p) : len(p) + len(a)] = torch.tensor(a)
    pixels = vlm.processor.image_processor(images, return_tensors="pt")["pixel_values"]  # (B, 3, H, W)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels, "pixel_values": pixels.to(vlm.dtype)}
    batch |= {k: v.expand(len(seqs), -1) for k, v in extra.items()}  # InstructBLIP's Q-Former prompt
    return {k: v.to(vlm.device) for k, v in batch.items()}


def training_pairs(o: FinetuneOptions) -> list[tuple[Path, str]]:
    """(image path, reference caption): every caption of the train split is one pair."""
    from ..config import load_config
    from ..data.adapters import load_dataset

    if o.epochs < 1 or o.batch_size < 1 or (o.max_steps is not None and o.max_steps < 1):
        raise InputError("--epochs, --batch-size and --max-steps must be at least 1")
    train = load_dataset(load_config(resolve(o.data)).data, ("train",)).split("train")
    pairs = [(r.path, c) for r in train for c in r.captions]
    if not pairs:
        raise InputError(f"{o.data}: the dataset has no training captions")
    return pairs


def lora_model(o: FinetuneOptions, image: Path) -> tuple[VLM, list[int], dict[str, torch.Tensor]]:
    """The VLM with LoRA adapters on, the prompt's token ids and (InstructBLIP) its Q-Former inputs,
    read once from the processor's answer for one image."""
    from peft import get_peft_model

    _, device = setup(o.device)
    dtype = o.dtype
    if dtype == "auto":  # training wants bfloat16's range on a GPU, float32 on a CPU
        dtype = "bfloat16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "float32"
    torch.manual_seed(o.seed)
    vlm = load_vlm(o.vlm, o.model, device, dtype)
    with quiet_peft():
        vlm.model = get_peft_model(vlm.model, lora_config(vlm, o))
    first = vlm.processor(images=[load_image(image)], text=[vlm.prompt_text(o.prompt)], return_tensors="pt")
    return vlm, first["input_ids"][0].tolist(), {k: v for k, v in first.items() if k.startswith("qformer_")}


def train_step(vlm: VLM, optimizer: torch.optim.Optimizer, params: list, batch: dict, batch_size: int) -> float:
    with memory_advice(batch_size):
        loss = vlm.model(**batch).loss  # mean over the answer tokens of the batch
        optimizer_step(loss, optimizer, params, grad_clip=1.0)
    return loss.item()


def finetune(o: FinetuneOptions) -> FinetuneResult:
    start = time.perf_counter()
    held = resolve(o.out)
    if not o.resume and held.is_dir() and any(held.iterdir()):  # its first save would replace that adapter
        raise ExistsError(
            f"{held} already holds a fine-tuning run; pass --resume to continue it, or choose another --out"
        )
    pairs = training_pairs(o)
    vlm, prompt_ids, extra = lora_model(o, pairs[0][0])
    params = [p for p in vlm.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=o.lr)
    steps_per_epoch = (len(pairs) + o.batch_size - 1) // o.batch_size
    total = min(o.max_steps or o.epochs * steps_per_epoch, o.epochs * steps_per_epoch)
    out = resolve(o.out)
    run = _Run(random.Random(o.seed), [], 0, 0)
    if o.resume:
        run = restore(vlm, optimizer, out, o)
    vlm.model.train()
    bar = progress(total=total - len(run.losses), desc=f"LoRA {o.vlm}", unit="step", enabled=o.progress)
    with StopSignals() as stop:
        for epoch in range(run.epoch, o.epochs):
            order_state = run.rng.getstate()  # a mid-epoch save keeps it: the resumed run draws this order again
            order = run.rng.sample(pairs, len(pairs))
            skip, run.skip = run.skip, 0
            for i in range(skip * o.batch_size, len(order), o.batch_size):
                if len(run.losses) >= total:
                    break
                chunk = order[i : i + o.batch_size]
                images = [load_image(p) for p, _ in chunk]
                batch = training_batch(vlm, prompt_ids, images, [c for _, c in chunk], extra)
                run.losses.append(train_step(vlm, optimizer, params, batch, o.batch_size))
                bar.update(1)
                bar.set_postfix(loss=f"{run.losses[-1]:.3f}")
                done_in_epoch, ends = i // o.batch_size + 1, i + o.batch_size >= len(order) or len(run.losses) >= total
                due = o.save_every_steps and len(run.losses) % o.save_every_steps == 0
                if not ends and (stop.received or due):
                    save_adapter(vlm, optimizer, out, o, run.losses, epoch, done_in_epoch, order_state)
                if stop.received and not ends:
                    raise TrainingStopped(_stopped(stop, out, len(run.losses)), stop.exit_code)
            save_adapter(vlm, optimizer, out, o, run.losses, epoch + 1, 0, run.rng.getstate())  # the epoch's end
            if stop.received:
                raise TrainingStopped(_stopped(stop, out, len(run.losses)), stop.exit_code)
    bar.close()
    return FinetuneResult(out, len(run.losses), run.losses, time.perf_counter() - start)


@dataclass
class _Run:
    rng: random.Random  # draws each epoch's order of the pairs
    losses: list[float]  # one per step taken
    epoch: int  # epochs complete
    skip: int  # steps of epoch ``epoch`` already taken


RESUME_MUST_MATCH = (
    "vlm",
    "model",
    "data",
    "prompt",
    "batch_size",
    "lr",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "seed",
)


def restore(vlm: VLM, optimizer: torch.optim.Optimizer, out: Path, o: FinetuneOptions) -> _Run:
    """The state of the run in ``out``: its trainable weights and optimiser loaded, its counters."""
    path = out / "trainer_state.pt"
    if not path.is_file():
        raise MissingError(f"--resume: {path} not found; {out} holds no vlm-finetune run to continue")
    state = torch.load(path, map_location=vlm.device, weights_only=True)
    theirs = state["options"]
    differ = [k for k in RESUME_MUST_MATCH if theirs.get(k) != getattr(o, k)]
    if differ:
        raise InputError(f"--resume: {out} was trained with other {', '.join(differ)} ({theirs[differ[0]]!r})")
    named = {n: p for n, p in vlm.model.named_parameters() if p.requires_grad}
    if set(named) != set(state["trainable"]):
        raise InputError(f"--resume: {path} holds other trainable weights than this model's LoRA set-up")
    with torch.no_grad():
        for n, p in named.items():
            p.copy_(state["trainable"][n])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"].cpu())
    rng = random.Random()
    rng.setstate(as_tuples(state["order_rng"]))
    print(f"resuming after {len(state['losses'])} steps ({path})", flush=True)
    return _Run(rng, list(state["losses"]), int(state["epoch"]), int(state["step_in_epoch"]))


def _stopped(stop: StopSignals, out: Path, steps: int) -> str:
    return f"stopped by {stop.name or 'a signal'} after step {steps}: saved {out}; continue with --resume"


def save_adapter(
    vlm: VLM,
    optimizer: torch.optim.Optimizer,
    out: Path,
    o: FinetuneOptions,
    losses: list[float],
    epoch: int,
    step_in_epoch: int,
    order_rng: Any,
) -> None:
    """The adapter and trainer_state.pt, written beside ``out`` then swapped in, so a kill mid-save
    leaves the previous save whole. ``epoch`` epochs complete, ``step_in_epoch`` steps of the next."""
    tmp = out.with_name(out.name + ".saving")
    shutil.rmtree(tmp, ignore_errors=True)
    vlm.model.save_pretrained(tmp)
    info = {"options": asdict(o), "epoch": epoch, "steps": len(losses), "losses": losses}
    (tmp / "finetune.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    trainable = {n: p.detach().cpu() for n, p in vlm.model.named_parameters() if p.requires_grad}
    state = {
        "options": asdict(o),
        "trainable": trainable,
        "optimizer": optimizer.state_dict(),
        "losses": losses,
        "epoch": epoch,
        "step_in_epoch": step_in_epoch,
        "order_rng": order_rng,
        "torch_rng": torch.get_rng_state(),
    }
    torch.save(state, tmp / "trainer_state.pt")
    old = out.with_name(out.name + ".old")
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
