"""Where captionlab reads and writes: one rule, as for any command-line tool. A relative path, in a
config, an option or a notebook setting, is relative to the working directory.

The repository's own folders are named by the paths a user types from its root (``code/configs``,
``dataset``, ``output``), so its commands run from there; a notebook, which Jupyter starts in
``code/``, moves to the repository root in its first cell (``notebooks.at_repository_root``). Nothing
is placed relative to where the package is installed (a non-editable install would write into
``site-packages``)."""

from __future__ import annotations

import os
from pathlib import Path

CONFIGS = Path("code") / "configs"


def resolve(path: str | os.PathLike) -> Path:
    """``path`` as an absolute path: a relative one against the working directory (``~`` expanded)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path.cwd() / p
