"""Running the notebooks headless (nbclient), with the tiny configs: what the tests do on the CPU and
``benchmarks/gpu_check.py`` does on a GPU, from one table so the two cannot drift apart.

Every notebook reads its settings from the environment (``CAPTIONLAB_CONFIG``, ``CAPTIONLAB_CONFIG_DIR``,
``CAPTIONLAB_OVERRIDES``, ...) through ``setting``, ``config_files`` and ``overrides``; ``tiny_env`` gives
the values that make it run in a minute or two with its runs, data and stand-in models under one folder."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import InputError
from .paths import CONFIGS, resolve

NOTEBOOKS = (
    "01_cnn_gru.ipynb",
    "02_grid_attention.ipynb",
    "03_self_critical.ipynb",
    "04_transformer_and_clipcap.ipynb",
    "05_llm_dataset_rebuild.ipynb",
    "06_retrain.ipynb",
    "07_clip_pretraining.ipynb",
    "08_real_photos.ipynb",
)
TINY = CONFIGS / "tiny"


# -- what a notebook's first cell reads --------------------------------------------------------------
def at_repository_root() -> Path:
    """Jupyter starts a notebook in its own folder (``code/``), and the repository's paths (``code/configs``,
    ``dataset``, ``output``) are typed from its root, as on the command line: move to the first folder,
    here or above, that holds ``code/configs``, and return it."""
    here = Path.cwd()
    for folder in (here, *here.parents):
        if (folder / CONFIGS).is_dir():
            os.chdir(folder)
            return folder
    raise InputError(f"no {CONFIGS} in {here} or above it: open the notebook inside a captionlab checkout")


def overrides(*extra: str, var: str = "CAPTIONLAB_OVERRIDES") -> list[str]:
    """The environment variable ``var``'s key=value pairs (shell-quoted), then ``extra``."""
    return shlex.split(os.environ.get(var, "")) + list(extra)


def setting(var: str, default: str | os.PathLike) -> Path:
    """The file or folder environment variable ``var`` names, else ``default`` (relative: to the working
    directory, the repository root after ``at_repository_root``)."""
    return resolve(os.environ.get(var) or default)


def config_files(defaults: Mapping[str, str | os.PathLike], tiny: Mapping[str, str] | None = None) -> dict[str, Path]:
    """A notebook's configs by role: ``CAPTIONLAB_CONFIG_DIR/<role>.yaml`` (or ``tiny[role]``.yaml there:
    the tests' tiny configs) where that folder is set, else ``defaults``."""
    folder = os.environ.get("CAPTIONLAB_CONFIG_DIR")
    if folder:
        return {role: resolve(folder) / f"{(tiny or {}).get(role, role)}.yaml" for role in defaults}
    return {role: resolve(path) for role, path in defaults.items()}


def tiny_env(name: str, work: Path, photos: Path | None = None) -> dict[str, str]:
    """The environment that runs notebook ``name`` on the tiny configs, one epoch, everything under
    ``work``. 05 and 06 share ``work/data`` (06 retrains on what 05 rebuilt); ``photos``: a Karpathy
    folder of real photographs for 08 and the real-photo sections of 03 and 04 (else a synthetic stand-in)."""
    data = f"data.path={work / 'data'} data.synthetic_n=60"
    tiny = resolve(TINY)
    env = {"CAPTIONLAB_CONFIG": str(tiny / "cnn_gru.yaml"), "CAPTIONLAB_CONFIG_DIR": str(tiny)}
    extra = {
        "04_transformer_and_clipcap.ipynb": f"model.clip={work / 'hf' / 'clip'} model.lm={work / 'hf' / 'gpt2'}",
        "08_real_photos.ipynb": "model.hidden_dim=128",  # both of its models read it
    }.get(name, "")
    if name == "03_self_critical.ipynb":
        env["CAPTIONLAB_SCST_CONFIG"] = str(tiny / "scst.yaml")
    if name in ("03_self_critical.ipynb", "04_transformer_and_clipcap.ipynb"):  # their real-photo sections
        env["CAPTIONLAB_REAL_PHOTOS"] = str(photos or work / "no_photos")
        lm = f" model.lm={work / 'hf' / 'gpt2'}" if name.startswith("04") else ""  # the tiny GPT-2 section 0 wrote
        env["CAPTIONLAB_REAL_OVERRIDES"] = (
            f"train.output_dir={work / 'runs'} train.cache_dir={work / 'cache'} train.epochs=1 "
            + ("data.carve_test=60" if photos else f"data.path={work / 'standin'}")
            + lm
        )
    if name == "08_real_photos.ipynb":
        env["CAPTIONLAB_REAL_PHOTOS"] = str(photos or work / "no_photos")
        # the test's 300 photos keep 240 to train on (the notebook carves 150 of the subset's 762)
        data = (
            "data.synthetic_n=60 data.carve_test=60" if photos else f"data.path={work / 'standin'} data.synthetic_n=60"
        )
    env["CAPTIONLAB_OVERRIDES"] = (
        f"train.output_dir={work / 'runs'} train.cache_dir={work / 'cache'} {data} train.epochs=1 {extra}".strip()
    )
    return env


def execute(name: str, env: Mapping[str, str], timeout: int = 600) -> Any:
    """Run ``code/<name>`` (from the repository root) top to bottom in a fresh kernel started in ``code/``,
    as Jupyter starts it, with ``env`` added to the environment; the executed notebook (nbformat) comes
    back, outputs included. A failing cell raises CellExecutionError."""
    import nbformat
    from nbclient import NotebookClient

    folder = resolve("code")
    nb = nbformat.read(folder / name, as_version=4)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment when it starts
    try:
        NotebookClient(
            nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
        ).execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def outputs_text(nb: Any) -> str:
    """Everything the notebook's code cells printed."""
    return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
