"""The three vision-language models ``rebuild`` and ``vlm-finetune`` drive, from local directories.

All three come from maintained transformers classes with their own processors (not LAVIS, which pins
transformers < 4.27). A directory is what ``save_pretrained`` writes; its ``config.json`` says which
model it holds, so a mismatch with ``--vlm`` is caught before any weights load.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..errors import CaptionlabError, InputError, MissingError
from ..hub import from_pretrained_checked, quiet, require_dir


@dataclass(frozen=True)
class Kind:
    name: str  # the --vlm value
    model_type: str  # config.json's model_type
    model_class: str  # transformers class
    projector: str  # vision -> language module: trained in full beside the LoRA adapters
    chat: bool  # the prompt goes through a chat template (USER: <image>\n... ASSISTANT:)


KINDS = {
    k.name: k
    for k in (
        Kind("instructblip", "instructblip", "InstructBlipForConditionalGeneration", "language_projection", False),
        Kind("blip2", "blip-2", "Blip2ForConditionalGeneration", "language_projection", False),
        Kind("llava", "llava", "LlavaForConditionalGeneration", "multi_modal_projector", True),
    )
}
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


class VLMError(CaptionlabError, RuntimeError):
    """A vision-language model cannot be used as asked; the message says what to change."""


def kind_of(name: str) -> Kind:
    if name not in KINDS:
        raise InputError(f"unknown --vlm {name!r}; expected one of {', '.join(KINDS)}")
    return KINDS[name]


def check_model_dir(path: str | Path, kind: Kind, key: str = "--model") -> Path:
    """The directory, after checking it holds the model type ``--vlm`` names."""
    p = require_dir(path, key)
    try:
        found = json.loads((p / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{key}: {p / 'config.json'} is not valid JSON ({e})") from None
    if found != kind.model_type:
        other = next((k.name for k in KINDS.values() if k.model_type == found), None)
        hint = f": pass --vlm {other}" if other else f" (captionlab drives {', '.join(KINDS)})"
        raise InputError(f"{key}: {p} holds a {found!r} model (config.json model_type), not {kind.name}{hint}")
    return p


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """'auto' is float16 on a GPU (S0 ran InstructBLIP-Vicuna-7B in fp16 in 19 GB) and float32 on a CPU,
    where half precision is slow or missing."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise InputError(f"unknown --dtype {name!r}; expected auto, {', '.join(DTYPES)}")
    if DTYPES[name] is torch.float16 and device.type == "cpu":
        raise InputError("--dtype float16 needs a GPU (CPU matrix products in float16 are not supported well)")
    return DTYPES[name]


@dataclass
class VLM:
    kind: Kind
    model: Any
    processor: Any
    path: Path
    device: torch.device
    dtype: torch.dtype

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    def prompt_text(self, prompt: str) -> str:
        """The text the processor gets: LLaVA's chat turn around the image and prompt, else the prompt."""
        if not self.kind.chat:
            return prompt
        if getattr(self.processor, "chat_template", None):
            turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
            return self.processor.apply_chat_template(turn, add_generation_prompt=True)
        return f"USER: <image>\n{prompt} ASSISTANT:"  # llava-1.5's own format

    def inputs(self, images: list[Image.Image], prompt: str) -> dict[str, torch.Tensor]:
        """One padded batch (left padding: new tokens follow every prompt directly) on the model's device."""
        self.tokenizer.padding_side = "left"
        batch = self.processor(
            images=images, text=[self.prompt_text(prompt)] * len(images), return_tensors="pt", padding=True
        )
        out = {k: v.to(self.device) for k, v in batch.items()}
        out["pixel_values"] = out["pixel_values"].to(self.dtype)  # (B, 3, H, W)
        return out

    def answer_ids(self, text: str) -> list[int]:
        """Token ids of an answer as the model should write it after the prompt, ending with end-of-text."""
        return [*self.tokenizer(" " + text.strip(), add_special_tokens=False)["input_ids"], self.eos_id]

    @property
    def eos_id(self) -> int:
        eos = self.tokenizer.eos_token_id
        return eos if eos is not None else self.model.config.text_config.eos_token_id

    def generate(self, inputs: dict[str, torch.Tensor], **generation: Any) -> list[str]:
        """Only the new text: decoder-only language models hand the prompt back first."""
        with torch.inference_mode():
            out = self.model.generate(**inputs, **generation, pad_token_id=self.tokenizer.pad_token_id)
        if not getattr(self.model.config.text_config, "is_encoder_decoder", False):
            out = out[:, inputs["input_ids"].shape[1] :]  # (B, new tokens)
        return self.tokenizer.batch_decode(out, skip_special_tokens=True)


def load_vlm(
    kind: str | Kind,
    path: str | Path,
    device: torch.device,
    dtype: str = "auto",
    load_in_8bit: bool = False,
    adapter: str | Path | None = None,
) -> VLM:
    """Model + processor from a local directory; a LoRA adapter from ``vlm-finetune`` merged in."""
    import transformers
    from transformers import AutoProcessor

    k = kind if isinstance(kind, Kind) else kind_of(kind)
    p = check_model_dir(path, k)
    torch_dtype = pick_dtype(dtype, device)
    quiet()
    extra: dict[str, Any] = {}
    if load_in_8bit:
        if device.type != "cuda":
            raise InputError("--load-in-8bit needs a CUDA GPU (bitsandbytes); on a CPU leave it out")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise InputError("--load-in-8bit needs bitsandbytes: pip install bitsandbytes") from None
        extra = {"quantization_config": transformers.BitsAndBytesConfig(load_in_8bit=True), "device_map": {"": device}}
    model = from_pretrained_checked(getattr(transformers, k.model_class), p, "--model", dtype=torch_dtype, **extra)
    if adapter:
        model = attach_adapter(model, adapter, merge=not load_in_8bit)
    if not load_in_8bit:
        model = model.to(device)
    model.eval()
    processor = AutoProcessor.from_pretrained(str(p), local_files_only=True)
    if processor.tokenizer.pad_token is None:  # some LLaMA tokenizers have none; padding is masked anyway
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    return VLM(k, model, processor, p, device, torch_dtype)


def attach_adapter(model: Any, adapter: str | Path, merge: bool = True) -> Any:
    from peft import PeftModel

    a = Path(adapter)
    if not (a / "adapter_config.json").is_file():
        raise MissingError(
            f"--adapter: {a} has no adapter_config.json: give the folder `captionlab vlm-finetune --out` wrote"
        )
    with quiet_peft():
        model = PeftModel.from_pretrained(model, str(a))
    return model.merge_and_unload() if merge else model


@contextmanager
def quiet_peft() -> Iterator[None]:
    """peft asks transformers a deprecated question (is_gradient_checkpointing) on every wrap."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        yield


def is_out_of_memory(e: BaseException) -> bool:
    """The allocator's OutOfMemoryError, or the same shortage met by cuBLAS or a kernel launch, which
    surfaces as a plain runtime error ("CUDA error: out of memory", CUBLAS_STATUS_ALLOC_FAILED)."""
    text = str(e)
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in text.lower() or "ALLOC_FAILED" in text


@contextmanager
def memory_advice(batch_size: int) -> Iterator[None]:
    """CUDA running out of memory inside becomes the VLMError that says what to lower; other errors pass."""
    try:
        yield
    except RuntimeError as e:  # OutOfMemoryError is one
        if is_out_of_memory(e):
            raise out_of_memory(batch_size) from None
        raise


def out_of_memory(batch_size: int, what: str = "--batch-size") -> VLMError:
    return VLMError(
        f"CUDA out of memory at batch size {batch_size}: lower {what} (e.g. {max(1, batch_size // 2)}), "
        "or --max-new-tokens, or load the model in --dtype float16 / bfloat16 or with --load-in-8bit"
    )
