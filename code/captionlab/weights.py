"""Where pretrained weights come from, in one order for every kind: an explicit local path, then the
library's own cache (torch.hub's for torchvision URLs, the Hugging Face cache for repository ids), then
a download, unless offline is asked for (``CAPTIONLAB_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``).

Every way this can fail ends in ``MissingWeightsError``: one line saying what to put where. Downloads
give up after ``CAPTIONLAB_DOWNLOAD_TIMEOUT`` seconds of silence (10 by default), so a network that
blocks model hubs answers with that line, not a hang. ``trust_remote_code`` is never used.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import MissingError
from .paths import resolve

OFFLINE_VARS = ("CAPTIONLAB_OFFLINE", "HF_HUB_OFFLINE")
# A Hugging Face repository id: "gpt2" or "openai/clip-vit-base-patch32" (no path separators beyond one '/').
REPO_ID = re.compile(r"[A-Za-z0-9][\w\-.]{0,95}(/[A-Za-z0-9][\w\-.]{0,95})?")
# Formats transformers can load into PyTorch; the others (TensorFlow, Flax, ONNX, ...) are not fetched.
NOT_PYTORCH = ["*.h5", "*.msgpack", "*.onnx", "*.ot", "*.tflite", "*.mlmodel", "onnx/*", "coreml/*", "*.gguf"]


class MissingWeightsError(MissingError):
    """Pretrained weights are not on disk and could not be fetched; the message says what to put where."""


def offline() -> bool:
    """True when the user asked for no network: captionlab's own switch or the Hub's."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in OFFLINE_VARS)


def timeout() -> float:
    raw = os.environ.get("CAPTIONLAB_DOWNLOAD_TIMEOUT", "10")
    try:
        return max(float(raw), 0.1)
    except ValueError:
        raise MissingWeightsError(f"CAPTIONLAB_DOWNLOAD_TIMEOUT={raw!r}: expected a number of seconds") from None


@contextmanager
def socket_timeout(seconds: float) -> Iterator[None]:
    """urllib (torch.hub) opens sockets with the process default timeout, which is none: set one."""
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


def _reason(e: BaseException) -> str:
    text = " ".join(str(getattr(e, "reason", None) or e).split())
    return f"{type(e).__name__}: {text}"[:200]


# ---------------------------------------------------------------- torchvision-style URLs (torch.hub)


def hub_cache_file(url: str) -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def url_weights(url: str, what: str, key: str) -> Path:
    """The local file of a torchvision weights URL: torch.hub's cache, filled by a hash-checked download
    (the hash is the one in the file name, as torchvision names its files) when the network allows."""
    import torch

    cached = hub_cache_file(url)
    if cached.is_file():
        return cached
    advice = (
        f"download {url} and place it at {cached} (torch.hub's cache; $TORCH_HOME moves it) or set "
        f"{key}=/path/to/{cached.name}; to train from random weights instead, set model.encoder.pretrained=false"
    )
    if offline():
        raise MissingWeightsError(f"pretrained {what} weights are not on this machine and offline is set: {advice}")
    match = torch.hub.HASH_REGEX.search(cached.name)
    cached.parent.mkdir(parents=True, exist_ok=True)
    try:
        with socket_timeout(timeout()):
            torch.hub.download_url_to_file(url, str(cached), match.group(1) if match else None, progress=True)
    except RuntimeError as e:  # torch.hub's hash check; the partial file is already removed
        raise MissingWeightsError(
            f"{url}: the downloaded file failed its hash check ({_reason(e)}); {advice}"
        ) from None
    except (OSError, ValueError) as e:  # URLError, HTTPError and socket timeouts are OSErrors
        why = _reason(e)
        raise MissingWeightsError(f"pretrained {what} weights could not be downloaded ({why}): {advice}") from None
    return cached


# ---------------------------------------------------------------- Hugging Face directories and repository ids


def is_repo_id(text: str) -> bool:
    return bool(REPO_ID.fullmatch(text)) and ".." not in text and "--" not in text


def model_dir(path: str | Path | None, key: str) -> Path:
    """The local directory of a Hugging Face model named by config ``key``: a directory as
    ``save_pretrained`` writes it, or a repository id (``openai/clip-vit-base-patch32``), taken from
    the Hugging Face cache or downloaded into it."""
    if not path:
        raise MissingWeightsError(
            f"{key} is not set: give a Hugging Face repository id (e.g. {key}=openai/clip-vit-base-patch32) "
            "or the local directory of one (the files save_pretrained writes: config.json, model.safetensors, ...)"
        )
    p = resolve(path)
    if p.is_dir():
        return _checked(p, key)
    if p.exists():
        raise MissingWeightsError(f"{key}: {p} is a file; give a model directory or a Hugging Face repository id")
    if not is_repo_id(str(path)):
        tiny = (
            "; it names a tiny random stand-in, which `captionlab tiny-hf CONFIG` writes (CONFIG: the config "
            "that names it, e.g. code/configs/tiny/clipcap_mlp.yaml)"
            if p.parent.name.startswith("tiny_hf")
            else ""
        )
        raise MissingWeightsError(
            f"{key}: directory not found: {p} (and {str(path)!r} is not a Hugging Face repository id){tiny}"
        )
    return _checked(_snapshot(str(path), key, p), key)


def _checked(p: Path, key: str) -> Path:
    if not (p / "config.json").is_file():
        raise MissingWeightsError(
            f"{key}: {p} has no config.json: not a Hugging Face model directory "
            "(save_pretrained writes config.json and the weights)"
        )
    return p


def _snapshot(repo: str, key: str, local: Path) -> Path:
    from huggingface_hub import HfApi, constants, snapshot_download

    cache = Path(constants.HF_HUB_CACHE)
    advice = (
        f"on a machine with access run `hf download {repo} --local-dir DIR`, copy DIR here and set {key}=DIR "
        f"(or copy that machine's Hugging Face cache to {cache})"
    )
    try:
        return Path(snapshot_download(repo, local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError, or a cache without this revision)
        pass
    if offline():
        raise MissingWeightsError(
            f"{key}: {repo!r} is not a local directory ({local}) nor in the Hugging Face cache, and offline is set: "
            + advice
        )
    try:
        files = [s.rfilename for s in HfApi().model_info(repo, timeout=timeout()).siblings or []]
        skip = [*NOT_PYTORCH, "*.bin"] if any(f.endswith(".safetensors") for f in files) else NOT_PYTORCH
        return Path(snapshot_download(repo, etag_timeout=timeout(), ignore_patterns=skip))
    except Exception as e:  # httpx/requests errors, RepositoryNotFoundError, GatedRepoError, timeouts...
        raise MissingWeightsError(
            f"{key}: {repo!r} is not a local directory ({local}) nor in the Hugging Face cache, and downloading "
            f"it failed ({_reason(e)}): {advice}"
        ) from None
