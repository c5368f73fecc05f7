"""Image-text retrieval recall, the yardstick of contrastive pre-training."""

from __future__ import annotations

import torch


def recall_at_k(
    images: torch.Tensor, texts: torch.Tensor, owner: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10)
) -> dict[str, float]:
    """images (N, D), texts (M, D) unit vectors; owner (M,): the image each text describes.

    i2t_R@k: share of images with one of their texts among their k nearest texts; t2i_R@k: share of
    texts whose image is among their k nearest images; mean_recall averages all of them. Chance
    R@k is about k/N (text->image)."""
    sim = images.float() @ texts.float().t()  # (N, M)
    owner = owner.to(sim.device)
    out: dict[str, float] = {}
    n = images.size(0)
    order = sim.argsort(1, descending=True)  # (N, M) texts by similarity, per image
    hit_rank = (
        torch.where(
            owner[order] == torch.arange(n, device=sim.device).unsqueeze(1),
            torch.arange(order.size(1), device=sim.device),
            order.size(1),
        )
        .min(1)
        .values
    )  # (N,)
    for k in ks:
        out[f"i2t_R@{k}"] = float((hit_rank < k).float().mean())
    img_order = sim.t().argsort(1, descending=True)  # (M, N) images by similarity, per text
    rank = (img_order == owner.unsqueeze(1)).float().argmax(1)  # (M,)
    for k in ks:
        out[f"t2i_R@{k}"] = float((rank < k).float().mean())
    out["mean_recall"] = sum(out.values()) / len(out)
    return out
