"""Figures: training curves from a run's log.csv, and images with their captions."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
from PIL import Image

from .data.images import load_image
from .errors import InputError
from .metric_keys import PLOTTED
from .runlog import read_log


def plot_training_curves(log_csv: str | Path, out: str | Path | None = None, metrics: Sequence[str] = PLOTTED):
    rows = read_log(log_csv)
    if not rows:
        raise InputError(f"{log_csv}: no epochs logged yet")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    trained = [r for r in rows if "train_loss" in r]  # a train.init_from run's epoch 0 trained nothing
    ax1.plot([int(r["epoch"]) for r in trained], [r["train_loss"] for r in trained], marker="o")
    ax1.set(title="training loss", xlabel="epoch", ylabel="loss")
    for m in metrics:
        scored = [r for r in rows if m in r]  # epochs 1-based, as printed during training; 0: the start
        if scored:
            ax2.plot([int(r["epoch"]) for r in scored], [r[m] for r in scored], marker="o", label=m)
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
            raise InputError(f"{run_dir}: no reward logged (is it a train.loss=scst run?)")
        (line,) = ax1.plot([r["step"] for r in steps], [r["reward"] for r in steps], label=f"{name}: sample reward")
        ax1.plot(
            [r["step"] for r in steps],
            [r["baseline"] for r in steps],
            ls="--",
            color=line.get_color(),
            label=f"{name}: baseline",
        )
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


def attention_plot(
    image: str | Path | Image.Image,
    words: Sequence[str],
    attention,
    image_size: int,
    sentinel=None,
    out: str | Path | None = None,
    cols: int = 5,
):
    """The image, then one panel per generated word with where the model looked: the attention grid
    (words, grid, grid) upsampled to the image and smoothed. For adaptive attention, the sentinel
    weight (how much the word came from the language model rather than the image) under each word."""
    import numpy as np
    from PIL import ImageFilter
    from torchvision.transforms import functional as TF

    im = image if isinstance(image, Image.Image) else load_image(image)
    im = TF.center_crop(TF.resize(im, image_size), image_size)  # what the model saw
    side = max(image_size, 224)
    shown = im.resize((side, side), Image.BICUBIC)
    panels = len(words) + 1
    cols = min(cols, panels)
    rows = (panels + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.55 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes.flat[0].imshow(shown)
    axes.flat[0].set_title("input", fontsize=9)
    for i, word in enumerate(words):
        grid = np.asarray(attention[i], dtype=np.float32)
        heat = Image.fromarray((255 * grid / max(float(grid.max()), 1e-8)).astype(np.uint8), "L")
        heat = heat.resize((side, side), Image.BILINEAR).filter(ImageFilter.GaussianBlur(side / grid.shape[0] / 3))
        ax = axes.flat[i + 1]
        ax.imshow(shown)
        ax.imshow(np.asarray(heat), cmap="jet", alpha=0.45, vmin=0, vmax=255)
        ax.set_title(word, fontsize=10)
        if sentinel is not None:
            ax.text(
                0.5,
                -0.06,
                f"sentinel {float(sentinel[i]):.2f}",
                transform=ax.transAxes,
                ha="center",
                va="top",
                fontsize=8,
                color="#444444",
            )
    fig.tight_layout()
    if out is not None:
        fig.savefig(out, dpi=100)
        plt.close(fig)
    return fig


def caption_grid(
    images: Sequence[str | Path | Image.Image],
    captions: Sequence[str],
    out: str | Path | None = None,
    references: Sequence[str] | None = None,
    cols: int = 4,
    label: str = "model",
    ref_label: str = "reference",
    wrap: int = 36,
):
    """Each image with its generated caption (and one reference, where given) in a text band beneath.

    Every row reserves the height its longest wrapped text needs, so no caption is clipped or runs
    into the images below, whatever its length. The model's words are black, a reference grey italic.
    """
    n = len(images)
    if n == 0:
        raise InputError("caption_grid needs at least one image")
    cols = min(cols, n)
    rows = (n + cols - 1) // cols
    texts = []
    for i, cap in enumerate(captions[:n]):
        pred = textwrap.wrap(f"{label}: {cap}", wrap) or [f"{label}:"]
        ref = textwrap.wrap(f"{ref_label}: {references[i]}", wrap) if references is not None else []
        texts.append((pred, ref))
    img_h, line_h, pad = 2.5, 0.165, 0.12  # inches
    lines = [max(len(p) + len(r) for p, r in texts[r * cols : (r + 1) * cols]) for r in range(rows)]
    heights = [h for k in lines for h in (img_h, k * line_h + pad)]
    fig = plt.figure(figsize=(2.75 * cols, sum(heights) + 0.1))
    grid = fig.add_gridspec(
        2 * rows, cols, height_ratios=heights, hspace=0.0, wspace=0.06, left=0.01, right=0.99, top=0.995, bottom=0.005
    )
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
        tx.text(0.0, y, "\n".join(pred), va="top", ha="left", fontsize=8.5, transform=tx.transAxes, linespacing=1.15)
        if ref:
            tx.text(
                0.0,
                y - step * len(pred),
                "\n".join(ref),
                va="top",
                ha="left",
                fontsize=8.5,
                color="#555555",
                style="italic",
                transform=tx.transAxes,
                linespacing=1.15,
            )
    if out is not None:
        fig.savefig(out, dpi=110)
        plt.close(fig)
    return fig
