"""The contrastive loss strategy of ``captionlab pretrain``: symmetric InfoNCE over the batch, and
retrieval recall on the val split instead of caption metrics. With ``train.seq_per_img`` k > 1 every
image brings k of its captions, all positives for it (image -> text: their probabilities summed;
text -> image: each caption has one right image), so one step uses k times the text.

Under DDP the embeddings of every rank are gathered (with gradients) before the loss, so the
negatives are the whole global batch. Gradient accumulation would not enlarge that batch: the
negatives are only the pairs in one forward pass. To afford larger batches, freeze the image
encoder and train from the feature cache (``train.feature_cache``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..retrieval import retrieval_recall
from .losses import LOSSES, Objective


def gather(x: torch.Tensor) -> torch.Tensor:
    """Every rank's rows (B, D) -> (world*B, D), gradients flowing back to each rank's own rows."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), 0)


class ContrastiveLoss(Objective):
    """InfoNCE; with ``lm_weight`` > 0 also next-token prediction on the text tower (its causal blocks and
    tied embeddings read as a GPT), which is what clip_gpt's decoder then starts from."""

    name = "contrastive"

    def __init__(self, lm_weight: float = 0.0) -> None:
        self.lm_weight = lm_weight

    def __call__(self, model: Any, images: torch.Tensor, captions: torch.Tensor, idx: torch.Tensor | None = None):
        b = images.size(0)
        k = captions.size(0) // b  # train.seq_per_img captions per image, all of them positives of it
        out = model(images, captions, lm=True) if self.lm_weight > 0 else model(images, captions)
        img, txt, scale = out[:3]  # unit vectors (B, D) and (B*k, D), and the logit scale
        img, txt = gather(img), gather(txt)  # (N, D), (N*k, D): ranks stay in order, so caption j is image j // k's
        logits = scale * img @ txt.t()  # (N, N*k): image i against every caption
        owner = torch.arange(txt.size(0), device=logits.device) // k  # (N*k,)
        positive = owner.unsqueeze(0) == torch.arange(img.size(0), device=logits.device).unsqueeze(1)  # (N, N*k)
        # image -> text: all k captions of the image are right (their probabilities summed); text -> image: one
        i2t = (logits.float().logsumexp(1) - logits.float().masked_fill(~positive, float("-inf")).logsumexp(1)).mean()
        loss = (i2t + F.cross_entropy(logits.t().float(), owner)) / 2
        acc = (logits.t().argmax(1) == owner).float().mean()  # each caption finds its image
        stats = {"temperature": float(1 / scale.detach()), "batch_acc": float(acc)}
        if self.lm_weight > 0:
            word_logits = out[3][:, :-1]  # (B*k, T-1, V): the word after each prefix
            lm = F.cross_entropy(
                word_logits.reshape(-1, word_logits.size(-1)).float(), captions[:, 1:].reshape(-1), ignore_index=0
            )
            stats["lm_loss"] = float(lm.detach())
            loss = loss + self.lm_weight * lm
        return loss, {"loss": float(loss.detach()), **stats}

    def validate(self, captioner: Any, dataset: Any, cfg: Any, progress: bool) -> dict[str, float]:
        """Image->text and text->image recall@1/5/10 on val (every reference caption counts)."""
        model = captioner.model
        was_training = model.training
        model.eval()
        try:
            return retrieval_recall(
                captioner,
                dataset.split("val"),
                cfg.train.val_batch_size,
                cfg.data.max_caption_len,
                cfg.data.num_workers,
                progress,
            )
        finally:
            model.train(was_training)


@LOSSES.register("contrastive")
def _contrastive(t: Any) -> ContrastiveLoss:
    return ContrastiveLoss(t.lm_weight)
