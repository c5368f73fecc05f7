"""Self-critical sequence training (Rennie et al. 2017; Luo 2020, "a better variant"): a loss strategy.

For each image, K captions are sampled through the shared decoding engine and scored by the reward
(fast CIDEr-D with document frequencies of the training references, BLEU-4, METEOR, or a mix). The
advantage of a sample is its reward minus a baseline: the greedy caption's reward (classic SCST) or
the mean reward of the image's other K-1 samples ("new" SCST, no greedy pass). The loss is the
policy gradient -(r - b) * log p(w_t), averaged over every sampled token up to and including <end>.
With ``train.scst_candidates: beam`` the K captions are the K best of a beam K wide instead (M2's SCST),
and with ``train.scst_update: output`` (``output_bias``) only the output layer (its bias) learns
(training/setup.py freezes the rest): on a few hundred photos, sampled captions and every weight fit the
training photos' own references.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import decoding
from ..data.dataset import ImageRecord
from ..data.ptb import ptb_tokenize
from ..errors import InputError
from ..metrics.cider import DocumentFrequency, cider_d
from ..registry import Registry
from .losses import LOSSES, Objective


def parse_reward(spec: str) -> dict[str, float]:
    """``"CIDEr"`` -> {"CIDEr": 1.0}; ``"CIDEr:1,Bleu_4:0.5"`` -> weights per metric."""
    out: dict[str, float] = {}
    for part in spec.split(","):
        name, _, weight = part.partition(":")
        out[name.strip()] = float(weight) if weight else 1.0
    return out


def policy_gradient_loss(logprobs: torch.Tensor, mask: torch.Tensor, advantage: torch.Tensor) -> torch.Tensor:
    """logprobs, mask (N, T) of the sampled tokens; advantage (N,). Mean over the sampled tokens, so a
    positive advantage makes its caption more likely as the loss falls."""
    mask = mask.to(logprobs.dtype)
    return -(advantage.unsqueeze(1) * logprobs * mask).sum() / mask.sum().clamp(min=1.0)


def mean_of_others(rewards: torch.Tensor) -> torch.Tensor:
    """rewards (B, K) -> each sample's baseline: the mean of the image's other K-1 rewards."""
    k = rewards.size(1)
    return (rewards.sum(1, keepdim=True) - rewards) / (k - 1)


class Reward:
    """Scores captions (word strings) against an image's references; CIDEr-D uses the training df."""

    def __init__(
        self, spec: str, train_references: dict[int, list[str]], text: Callable[[str], str] = ptb_tokenize
    ) -> None:
        """``text``: caption -> space-separated tokens the metrics count (Chinese: its characters or words)."""
        self.weights = parse_reward(spec)
        self.text = text
        self.references = {k: [text(c) for c in v] for k, v in train_references.items()}
        self.df = DocumentFrequency.from_references(self.references) if "CIDEr" in self.weights else None

    def __call__(self, captions: Sequence[str], record_ids: Sequence[int]) -> np.ndarray:
        """captions[i] for the image record_ids[i] (ids may repeat: K samples of one image)."""
        cands = {i: [self.text(c)] for i, c in enumerate(captions)}
        refs = {i: self.references[r] for i, r in enumerate(record_ids)}
        total = np.zeros(len(captions))
        for name, w in self.weights.items():
            total += w * self._metric(name, cands, refs)
        return total

    def _metric(self, name: str, cands: dict, refs: dict) -> np.ndarray:
        return REWARDS.get(name)(cands, refs, self)


# train.scst_reward names -> per-caption scores (cands, refs: id -> tokenised captions). A new reward
# is one registered function here; the config accepts its name from then on.
REWARDS: Registry[Callable[[dict, dict, Reward], np.ndarray]] = Registry("reward")


@REWARDS.register("CIDEr")
def _cider(cands: dict, refs: dict, reward: Reward) -> np.ndarray:
    return cider_d(cands, refs, df=reward.df)[1]  # CIDEr-D with the training set's document frequencies


@REWARDS.register("Bleu_4")
def _bleu4(cands: dict, refs: dict, reward: Reward) -> np.ndarray:
    from pycocoevalcap.bleu.bleu import Bleu

    return np.asarray(Bleu(4).compute_score(refs, cands, verbose=0)[1][3])


@REWARDS.register("METEOR")
def _meteor(cands: dict, refs: dict, reward: Reward) -> np.ndarray:
    from ..metrics.coco import meteor

    return np.asarray(meteor().compute_score(refs, cands)[1])  # one Java process for the whole run


class SelfCriticalLoss(Objective):
    """The strategy the trainer drives with ``train.loss: scst``. ``prepare`` is called once with the
    training records so rewards can use each image's full reference set, and how to turn sampled ids into words."""

    name = "scst"
    needs_raw_model = True  # sampling calls init_state/step, not forward: the trainer syncs DDP gradients

    def __init__(
        self,
        samples: int = 5,
        baseline: str = "greedy",
        temperature: float = 1.0,
        reward: str = "CIDEr",
        max_len: int = 16,
        candidates: str = "sample",
    ) -> None:
        if baseline not in ("greedy", "mean"):
            raise InputError(f"train.scst_baseline must be greedy or mean, got {baseline!r}")
        if baseline == "mean" and samples < 2:
            raise InputError("train.scst_baseline=mean needs train.scst_samples >= 2 (the others' mean)")
        self.samples, self.baseline, self.temperature = samples, baseline, temperature
        if candidates not in ("sample", "beam"):
            raise InputError(f"train.scst_candidates must be sample or beam, got {candidates!r}")
        self.reward_spec, self.max_len, self.candidates = reward, max_len, candidates
        self.reward: Reward | None = None
        self.words: Callable[[torch.Tensor], list[str]] | None = None
        self.bad_endings: torch.Tensor | None = None

    def prepare(
        self,
        records: Sequence[ImageRecord],
        words: Callable[[torch.Tensor], list[str]],
        text: Callable[[str], str] = ptb_tokenize,
        bad_endings: torch.Tensor | None = None,
    ) -> None:
        """``words``: token ids (N, T) -> caption strings, e.g. ``Captioner.words``; ``text``: what the
        reward counts in a caption (see ``scoring_text``); ``bad_endings``: ids <end> may not follow while
        sampling and in the greedy baseline (``decode.bad_endings``: the captions decoded later obey it too)."""
        self.words, self.bad_endings = words, bad_endings
        self.reward = Reward(self.reward_spec, {i: list(r.captions) for i, r in enumerate(records)}, text)

    def _candidates(self, model: nn.Module, images: torch.Tensor, state: Any | None) -> decoding.DecodeOutput:
        """``samples`` captions an image: drawn, with log-probabilities under the distribution drawn from
        (train.scst_temperature) so the gradient is unbiased; or (``candidates="beam"``, Cornia et al.'s
        M2) the best of a beam that wide, in the model's current mode, then scored with gradients: the
        update ranks the captions beam search would return, as they are evaluated."""
        if self.candidates == "beam":
            with torch.no_grad():
                beams = decoding.beam_search(
                    model, images, self.samples, self.max_len, keep_greedy=False, n_best=self.samples,
                    bad_endings=self.bad_endings,
                )  # fmt: skip
            lp = decoding.sequence_logprobs(model, images, beams.tokens)  # (B*k, T)
            return decoding.DecodeOutput(beams.tokens, lp, lp.sum(1))
        return decoding.sample(
            model, images, self.max_len, self.temperature, n=self.samples, state=state, sampled_logprobs=True,
            bad_endings=self.bad_endings,
        )  # fmt: skip

    def __call__(
        self, model: nn.Module, images: torch.Tensor, captions: torch.Tensor, idx: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if self.reward is None or idx is None:
            raise RuntimeError("SelfCriticalLoss.prepare(records, words) must run before training")
        b, k = images.size(0), self.samples
        ids = idx.tolist()
        # sampling encodes the images once for samples and an eval-mode baseline; beam search encodes its own
        state = model.init_state(images) if self.candidates == "sample" else None
        out = self._candidates(model, images, state)  # tokens, logprobs (B*k, T), image-major
        rewards = torch.as_tensor(
            self.reward(self.words(out.tokens), [i for i in ids for _ in range(k)]),
            dtype=torch.float32,
            device=images.device,
        ).view(b, k)
        if self.baseline == "greedy":
            was_training = model.training
            model.eval()
            with torch.no_grad():
                reuse = None if was_training else state  # None: greedy encodes the images in eval mode itself
                g = decoding.greedy(model, images, self.max_len, state=reuse, bad_endings=self.bad_endings)
            model.train(was_training)
            base = (
                torch.as_tensor(self.reward(self.words(g.tokens), ids), dtype=torch.float32, device=images.device)
                .unsqueeze(1)
                .expand(b, k)
            )
        else:
            base = mean_of_others(rewards)
        advantage = (rewards - base).reshape(-1)  # (B*K,)
        mask = out.tokens != model.pad_id  # sampled tokens up to and including <end>
        loss = policy_gradient_loss(out.logprobs, mask, advantage)
        n_tok = float(mask.sum())
        nll = float(-(out.logprobs.detach() * mask).sum()) / max(n_tok, 1.0)  # per sampled token
        stats: dict[str, Any] = {
            "loss": float(loss.detach()),
            "reward": float(rewards.mean()),
            "baseline": float(base.mean()),
            "advantage_std": float(advantage.std()) if advantage.numel() > 1 else 0.0,
            "sample_nll": nll,  # of the samples under the sampling distribution: an entropy estimate only at T=1
        }
        return loss, stats


@LOSSES.register("scst")
def _self_critical(t: Any) -> SelfCriticalLoss:
    return SelfCriticalLoss(
        t.scst_samples, t.scst_baseline, t.scst_temperature, t.scst_reward, t.scst_max_len, t.scst_candidates
    )
