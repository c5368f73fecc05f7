"""Figures: training curves from a run's log.csv, and images with their captions."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
from PIL import Image

from .data.images import load_image
from .training.runlog import read_log


def plot_training_curves(log_csv: str | Path, out: str | Path | None = None,
                         metrics: Sequence[str] = ("Bleu_4", "ROUGE_L", "CIDEr")):
    rows = read_log(log_csv)
    if not rows:
        raise ValueError(f"{log_csv}: no epochs logged yet")
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot(epochs, [r["train_loss"] for r in rows], marker="o")
    ax1.set(title="training loss (cross-entropy)", xlabel="epoch", ylabel="loss")
    for m in metrics:
        if m in rows[0]:
            ax2.plot(epochs, [r[m] for r in rows], marker="o", label=m)
    ax2.set(title="validation", xlabel="epoch")
    ax2.legend()
    fig.tight_layout()
    if out is not None:
        fig.savefig(out, dpi=110)
        plt.close(fig)
    return fig


def caption_grid(images: Sequence[str | Path | Image.Image], captions: Sequence[str], out: str | Path | None = None,
                 references: Sequence[str] | None = None, cols: int = 4):
    """Each image with its generated caption (and one reference, where given) underneath."""
    n = len(images)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (im, cap) in enumerate(zip(images, captions)):
        ax = axes.flat[i]
        ax.imshow(im if isinstance(im, Image.Image) else load_image(im))
        text = "\n".join(textwrap.wrap(cap, 34))
        if references is not None:
            text += "\n" + "\n".join(textwrap.wrap("ref: " + references[i], 34))
        ax.set_title(text, fontsize=8, loc="left")
    fig.tight_layout()
    if out is not None:
        fig.savefig(out, dpi=110)
        plt.close(fig)
    return fig
