"""Where the repository keeps data and outputs, so every entry point agrees."""

from __future__ import annotations

import os
from pathlib import Path

# code/captionlab/paths.py -> repository root
ROOT = Path(os.environ.get("CAPTIONLAB_ROOT", Path(__file__).resolve().parents[2]))
CONFIGS = ROOT / "code" / "configs"
DATASETS = ROOT / "dataset"
OUTPUT = ROOT / "output"
CHECKPOINTS = OUTPUT / "model_ckpt"


def resolve(path: str | os.PathLike) -> Path:
    """Relative paths in configs are relative to the repository root, not the working directory."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else ROOT / p
