"""Image loading and the encoder's input transform."""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision import transforms

from ..errors import InputError

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}  # what a folder of images holds
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BadImageError(InputError):
    """An image file that is missing or cannot be decoded."""


class ImageTooLargeError(BadImageError):
    """An image refused for its pixel count, read from the header before decoding (a decompression bomb)."""


def to_rgb(img: Image.Image) -> Image.Image:
    """Greyscale, CMYK, palette and 16-bit images become RGB; transparency is laid on white."""
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        img = img.point(lambda v: v / 256).convert("L")
    return img.convert("RGB")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise BadImageError(f"image file not found: {path}")
    if not path.is_file():
        if not any(q.suffix.lower() in IMAGE_EXTS for q in path.rglob("*")):
            raise BadImageError(f"{path} is a directory with no images in it ({', '.join(sorted(IMAGE_EXTS))})")
        raise BadImageError(f"{path} is a directory, not an image file")
    if path.stat().st_size == 0:
        raise BadImageError(f"image file is empty (0 bytes): {path}")


def _what_it_is(head: bytes) -> str:
    """What a file that PIL cannot identify holds, from its first bytes (an upload named photo.jpg that
    is a saved web page is the usual case)."""
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "an HTML page"
    kinds = {b"%PDF": "a PDF document", b"PK\x03\x04": "a ZIP archive", b"\x1f\x8b": "a gzip archive"}
    kind = next((v for k, v in kinds.items() if head.startswith(k)), None)
    if kind:
        return kind
    if head and all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return "text"
    return "no image format PIL knows"


@contextmanager
def _decoding(path: Path, head: bytes = b"") -> Iterator[None]:
    """Every way PIL fails on a file becomes one BadImageError naming it. An image over PIL's
    decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``, 89 M pixels; raise it from Python for
    huge scans) is refused before it is decoded, not left to exhaust memory."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except BadImageError:  # ours, already naming the image
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageTooLargeError(f"refusing image {path}: {e}") from None
    except UnidentifiedImageError:  # PIL's message names a BytesIO object for an upload: say what it is
        raise BadImageError(f"cannot read image {path}: it is {_what_it_is(head)}, not an image") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise BadImageError(f"cannot read image {path}: {e}") from None


def load_image(path: str | os.PathLike) -> Image.Image:
    """Decode fully (so a truncated file fails here, not deep in a DataLoader), turn it upright as
    its EXIF orientation says (phones store photos sideways with a rotation tag), convert to RGB."""
    path = Path(path)
    _check_file(path)
    return _decode(path, path, head=_head(path))


def _head(path: Path) -> bytes:
    """A file's first bytes, to say what it is when PIL cannot identify it."""
    try:
        with open(path, "rb") as f:
            return f.read(64)
    except OSError:  # unreadable: opening it for decoding says why, inside _decoding
        return b""


def decode_image(data: bytes, name: str = "upload", max_pixels: int | None = None) -> Image.Image:
    """``load_image`` for bytes (an upload): the same checks, plus a pixel limit read from the header,
    before any decoding, so a small file that would unpack into gigabytes is refused cheaply."""
    if not data:
        raise BadImageError(f"image {name} is empty (0 bytes)")
    return _decode(io.BytesIO(data), Path(name), max_pixels, data[:64])


def _decode(source: Path | io.BytesIO, name: Path, max_pixels: int | None = None, head: bytes = b"") -> Image.Image:
    with _decoding(name, head), Image.open(source) as img:
        if max_pixels is not None and img.width * img.height > max_pixels:
            raise ImageTooLargeError(
                f"refusing image {name}: {img.width}x{img.height} pixels is over the limit of "
                f"{max_pixels / 1e6:.0f} M pixels (a decompression bomb?)"
            )
        img.load()
        return to_rgb(ImageOps.exif_transpose(img))


def check_image(path: str | os.PathLike) -> None:
    """Cheaper than ``load_image`` for large JPEGs: decodes at reduced scale, still catches truncation."""
    path = Path(path)
    _check_file(path)
    with _decoding(path, _head(path)), Image.open(path) as img:
        img.draft("RGB", (64, 64))
        img.load()


def check_header(path: str | os.PathLike) -> None:
    """What a dataset's load checks of every image: there, not empty, and a format PIL reads with a size
    it accepts, from the header alone (no pixel is decoded: a truncated file is found when it is read,
    and ``data.on_bad_image`` says what happens then)."""
    path = Path(path)
    _check_file(path)
    with _decoding(path, _head(path)), Image.open(path) as img:
        if img.width < 1 or img.height < 1:
            raise BadImageError(f"cannot read image {path}: its header says {img.width}x{img.height} pixels")


def build_transform(
    image_size: int,
    resize: int | None = None,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> transforms.Compose:
    return transforms.Compose(
        [
            transforms.Resize(resize or image_size),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )


def images_to_tensor(images: list[Image.Image], transform: transforms.Compose) -> torch.Tensor:
    return torch.stack([transform(to_rgb(im)) for im in images])  # (batch, 3, H, W)
