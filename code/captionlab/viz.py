"""Figures: training curves from a run's log.csv, and images with their captions."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
from PIL import Image

from .data.images import load_image
from .training.runlog import read_log


def plot_training_curves(log_csv: str | Path, out: str | Path | None = None,
                         metrics: Sequence[str] = ("Bleu_4", "ROUGE_L", "CIDEr")):
    rows = read_log(log_csv)
    if not rows:
        raise ValueError(f"{log_csv}: no epochs logged yet")
    epochs = [int(r["epoch"]) for r in rows]  # 1-based, as printed during training
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot(epochs, [r["train_loss"] for r in rows], marker="o")
    ax1.set(title="training loss", xlabel="epoch", ylabel="loss")
    for m in metrics:
        if m in rows[0]:
            ax2.plot(epochs, [r[m] for r in rows], marker="o", label=m)
    ax2.set(title="validation", xlabel="epoch")
    ax2.legend()
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    if out is not None:
        fig.savefig(out, dpi=110)
        plt.close(fig)
    return fig


def plot_rewards(runs: dict[str, str | Path], out: str | Path | None = None, metric: str = "CIDEr"):
    """Self-critical runs side by side: mean sample reward and baseline per logged step (steps.csv),
    and the val metric per epoch (log.csv)."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, run_dir in runs.items():
        steps = read_log(Path(run_dir) / "steps.csv")
        if not steps or "reward" not in steps[0]:
            raise ValueError(f"{run_dir}: no reward logged (is it a train.loss=scst run?)")
        line, = ax1.plot([r["step"] for r in steps], [r["reward"] for r in steps], label=f"{name}: sample reward")
        ax1.plot([r["step"] for r in steps], [r["baseline"] for r in steps], ls="--", color=line.get_color(),
                 label=f"{name}: baseline")
        epochs = read_log(Path(run_dir) / "log.csv")
        ax2.plot([int(r["epoch"]) for r in epochs], [r[metric] for r in epochs], marker="o", label=name)
    ax1.set(title="reward during training", xlabel="step", ylabel="reward")
    ax2.set(title=f"validation {metric}", xlabel="epoch")
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    if out is not None:
        fig.savefig(out, dpi=110)
        plt.close(fig)
    return fig


def caption_grid(images: Sequence[str | Path | Image.Image], captions: Sequence[str], out: str | Path | None = None,
                 references: Sequence[str] | None = None, cols: int = 4, label: str = "model",
                 ref_label: str = "reference", wrap: int = 36):
    """Each image with its generated caption (and one reference, where given) in a text band beneath.

    Every row reserves the height its longest wrapped text needs, so no caption is clipped or runs
    into the images below, whatever its length. The model's words are black, a reference grey italic.
    """
    n = len(images)
    if n == 0:
        raise ValueError("caption_grid needs at least one image")
    cols = min(cols, n)
    rows = (n + cols - 1) // cols
    texts = []
    for i, cap in enumerate(captions[:n]):
        pred = textwrap.wrap(f"{label}: {cap}", wrap) or [f"{label}:"]
        ref = textwrap.wrap(f"{ref_label}: {references[i]}", wrap) if references is not None else []
        texts.append((pred, ref))
    img_h, line_h, pad = 2.5, 0.165, 0.12  # inches
    lines = [max(len(p) + len(r) for p, r in texts[r * cols:(r + 1) * cols]) for r in range(rows)]
    heights = [h for k in lines for h in (img_h, k * line_h + pad)]
    fig = plt.figure(figsize=(2.75 * cols, sum(heights) + 0.1))
    grid = fig.add_gridspec(2 * rows, cols, height_ratios=heights, hspace=0.0, wspace=0.06,
                            left=0.01, right=0.99, top=0.995, bottom=0.005)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        ax = fig.add_subplot(grid[2 * r, c])
        ax.imshow(im if isinstance(im, Image.Image) else load_image(im))
        ax.axis("off")
        tx = fig.add_subplot(grid[2 * r + 1, c])
        tx.axis("off")
        pred, ref = texts[i]
        step = line_h / heights[2 * r + 1]  # one line as a fraction of the text band
        y = 1.0 - pad / 2 / heights[2 * r + 1]
        tx.text(0.0, y, "\n".join(pred), va="top", ha="left", fontsize=8.5, transform=tx.transAxes,
                linespacing=1.15)
        if ref:
            tx.text(0.0, y - step * len(pred), "\n".join(ref), va="top", ha="left", fontsize=8.5, color="#555555",
                    style="italic", transform=tx.transAxes, linespacing=1.15)
    if out is not None:
        fig.savefig(out, dpi=110)
        plt.close(fig)
    return fig
