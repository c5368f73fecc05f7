"""``captionlab serve``: a caption web page and a JSON API over one captioner, with dynamic batching.

FastAPI (on Starlette) + uvicorn: maintained, async (many waiting clients cost no threads), multipart
uploads and OpenAPI docs (/docs) built in. The model runs in the batcher's one worker thread.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import torch
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from ..captioner import Captioner
from ..data.images import BadImageError, ImageTooLargeError, decode_image
from .batcher import DynamicBatcher, QueueFull

LIMITS = {"beam_size": (1, 20), "max_len": (1, 100)}


class Error(BaseModel):
    """Every refusal: one line saying what is wrong (not FastAPI's list of validation errors)."""

    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Error, "description": "the upload is not a readable image (or is empty)"},
    413: {"model": Error, "description": "the upload is over the size limit, or the image over the pixel limit"},
    422: {"model": Error, "description": "a form field is missing or out of range; the detail names it"},
    503: {
        "model": Error,
        "description": "the queue is full: retry after the Retry-After seconds",
        "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "string"}}},
    },
}


@dataclass(frozen=True)
class Settings:
    """How to decode; requests with equal settings share a batch."""

    beam_size: int
    max_len: int
    sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    attention: bool = False


@dataclass
class ServeOptions:
    max_batch: int = 32
    max_wait_ms: float = 10.0
    max_queue: int = 256
    max_image_mb: float = 20.0
    max_pixels: int = 50_000_000


@dataclass
class Upload:
    image: Any  # PIL image, for the attention figure
    tensor: Any  # (3, H, W): transformed in the request's thread, so the model's thread only decodes


def prepare(captioner: Captioner, data: bytes, name: str, max_pixels: int) -> Upload:
    image = decode_image(data, name, max_pixels)
    return Upload(image, captioner.transform(image))


def decode_batch(captioner: Captioner, uploads: list[Upload], s: Settings) -> list[dict[str, Any]]:
    """One batch through the engine (in the worker thread); attention figures when asked and available."""
    batch = torch.stack([u.tensor for u in uploads])  # (batch, 3, H, W)
    out = captioner.decode(batch, s.beam_size, s.max_len, s.sample, s.temperature, s.top_p)
    captions = captioner.words(out.tokens)
    logprobs = out.logprobs.sum(1).tolist()  # (batch,) summed over the caption's tokens
    results = [{"caption": c, "logprob": lp} for c, lp in zip(captions, logprobs)]
    if s.attention and out.attention is not None:
        from ..viz import attention_plot

        for u, trace, r in zip(uploads, captioner.traces(out), results):
            buf = io.BytesIO()
            attention_plot(u.image, trace.words, trace.attention, captioner.config.data.image_size, trace.sentinel, buf)
            r["attention_png"] = base64.b64encode(buf.getvalue()).decode("ascii")
    return results


def create_app(
    captioner: Captioner, options: ServeOptions | None = None, info: dict[str, Any] | None = None
) -> FastAPI:
    o = options or ServeOptions()
    max_bytes = int(o.max_image_mb * 1024 * 1024)
    batcher = DynamicBatcher(
        lambda items, s: decode_batch(captioner, items, s), o.max_batch, o.max_wait_ms, o.max_queue
    )
    d = captioner.config.decode
    info = {
        "model": captioner.config.model.name,
        "vocab_size": len(captioner.vocab),
        "decode": {"beam_size": d.beam_size, "max_len": d.max_len},
        "max_words": captioner.max_words,  # the longest caption the model can write (None: no limit)
        "limits": asdict(o),
        **(info or {}),
    }

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        batcher.close()

    app = FastAPI(
        title="captionlab", description="Image captioning with a captionlab checkpoint.", version="1", lifespan=lifespan
    )
    app.state.batcher = batcher

    @app.exception_handler(RequestValidationError)
    async def one_line(_: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ())[1:]) or "request"
        hint = ": send the image as the multipart form field 'file'" if where == "file" else ""
        return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid')}{hint}"}, status_code=422)

    app.add_middleware(BodyLimit, max_bytes=max_bytes + 65536, mb=o.max_image_mb)  # + room for the form

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "waiting": batcher.waiting, "batches": batcher.batches}

    @app.get("/info")
    async def get_info() -> dict[str, Any]:
        return info

    @app.post("/caption", responses=ERRORS)
    async def caption(
        file: Annotated[UploadFile, File(description="the image (PNG, JPEG, ...)")],
        beam_size: Annotated[
            int | None, Form(description="beam width; 1 is greedy (default: the checkpoint's)")
        ] = None,
        max_len: Annotated[
            int | None,
            Form(description="decoding steps, <end> included: at most max_len - 1 words (default: the checkpoint's)"),
        ] = None,
        sample: Annotated[bool, Form(description="sample instead of beam search")] = False,
        temperature: Annotated[float, Form(description="sampling temperature, in (0, 10]")] = 1.0,
        top_p: Annotated[float, Form(description="nucleus sampling mass, in (0, 1]")] = 1.0,
        attention: Annotated[bool, Form(description="also return the per-word attention figure")] = False,
    ) -> dict[str, Any]:
        start = time.perf_counter()
        settings = Settings(
            _within("beam_size", d.beam_size if beam_size is None else beam_size),
            _within("max_len", d.max_len if max_len is None else max_len, captioner.max_words),
            sample,
            _positive("temperature", temperature, 10.0) if sample else 1.0,
            _positive("top_p", top_p, 1.0) if sample else 1.0,
            attention and info.get("attention", False),
        )
        data = await file.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise HTTPException(413, f"image over the {o.max_image_mb:g} MB limit")
        try:
            item = await run_in_threadpool(prepare, captioner, data, file.filename or "upload", o.max_pixels)
        except BadImageError as e:
            raise HTTPException(413 if isinstance(e, ImageTooLargeError) else 400, str(e)) from None
        try:
            result = await batcher.submit(item, settings)
        except QueueFull as e:
            return JSONResponse({"detail": f"server busy: {e}; retry shortly"}, 503, headers={"Retry-After": "1"})
        result["timings"]["total_ms"] = (time.perf_counter() - start) * 1000
        return {"model": info["model"], "settings": asdict(settings), **result}

    return app


class BodyLimit:
    """Refuses a request body over ``max_bytes`` while it is read (a chunked upload has no Content-Length
    to check first): the receive channel counts bytes and raises 413 past the limit, so an oversized
    upload is never parsed whole. ``mb`` is the limit users set, for the message."""

    def __init__(self, app: Any, max_bytes: int, mb: float) -> None:
        self.app, self.max_bytes, self.message = app, max_bytes, f"upload too large: over the {mb:g} MB limit"

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or ()).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            return await JSONResponse({"detail": self.message}, status_code=413)(scope, receive, send)
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise HTTPException(413, self.message)  # FastAPI passes it on from form parsing as it is
            return message

        await self.app(scope, counted, send)


def _within(name: str, value: int, model_limit: int | None = None) -> int:
    lo, hi = LIMITS[name]
    hi = min(hi, model_limit) if model_limit is not None else hi
    if not lo <= value <= hi:
        why = f": this model writes at most {hi} words" if hi == model_limit else ""
        raise HTTPException(422, f"{name}: {value} is out of range [{lo}, {hi}]{why}")
    return value


def _positive(name: str, value: float, hi: float) -> float:
    if not 0 < value <= hi:
        raise HTTPException(422, f"{name}: {value} is out of range (0, {hi:g}]")
    return value


def load_app(checkpoints: list[str | Path], device: str = "auto", options: ServeOptions | None = None) -> FastAPI:
    """The app for checkpoint files (several: an ensemble); one warm-up decode tells whether the model
    has attention to show, and makes the first request as fast as the rest."""
    from PIL import Image

    from ..captioner import load_checkpoint
    from ..checkpoint import read_checkpoint

    captioner = load_checkpoint([str(c) for c in checkpoints] if len(checkpoints) > 1 else checkpoints[0], device)
    size = captioner.config.data.image_size
    warm = captioner.decode([Image.new("RGB", (size, size))], 1, 2)
    info = {
        "checkpoints": [str(c) for c in checkpoints],
        "metrics": {str(c): read_checkpoint(c).get("metrics", {}) for c in checkpoints},
        "attention": warm.attention is not None,
    }
    return create_app(captioner, options, info)
