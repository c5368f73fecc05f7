"""Image encoders. A CNN gives a feature map; global models pool it, attention models (later) keep the grid."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tvm

from ..config import EncoderConfig
from ..paths import resolve

RESNETS = {
    "resnet18": (tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (tvm.resnet34, tvm.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V1),
    "resnet101": (tvm.resnet101, tvm.ResNet101_Weights.IMAGENET1K_V1),
    "resnet152": (tvm.resnet152, tvm.ResNet152_Weights.IMAGENET1K_V1),
}


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights are not on disk; the message says which file to put where."""


def torchvision_cache_path(name: str) -> tuple[Path, str]:
    """Where torchvision would cache ``name``'s ImageNet weights, and the URL it would fetch them from."""
    url = RESNETS[name][1].url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url), url


def load_pretrained_state(cfg: EncoderConfig) -> dict[str, torch.Tensor]:
    """Read weights from ``encoder.weights`` or torchvision's cache; never download."""
    if cfg.weights:
        path = resolve(cfg.weights)
        if not path.is_file():
            raise MissingWeightsError(f"model.encoder.weights: file not found: {path}")
    else:
        path, url = torchvision_cache_path(cfg.name)
        if not path.is_file():
            raise MissingWeightsError(
                f"pretrained {cfg.name} weights are not on this machine. Download {url} and either "
                f"place it at {path} (torchvision's cache; $TORCH_HOME moves it) or set "
                f"model.encoder.weights=/path/to/{path.name}. To train from random weights instead, "
                f"set model.encoder.pretrained=false.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state


class ResNetEncoder(nn.Module):
    """torchvision ResNet without its classifier: images (B, 3, H, W) -> feature map (B, C, H/32, W/32)."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        if cfg.name not in RESNETS:
            raise ValueError(f"unknown encoder {cfg.name!r}; choose one of {', '.join(RESNETS)}")
        net = RESNETS[cfg.name][0](weights=None)
        if cfg.pretrained:
            missing, unexpected = net.load_state_dict(load_pretrained_state(cfg), strict=False)
            if [k for k in missing if not k.startswith("fc.")] or unexpected:
                raise ValueError(f"{cfg.name} weights do not match the architecture: missing {missing[:5]}, "
                                 f"unexpected {unexpected[:5]}")
        self.out_dim: int = net.fc.in_features
        self.body = nn.Sequential(*list(net.children())[:-2])
        # Randomly initialised weights must be trained; pretrained ones only when asked.
        self.set_trainable(cfg.fine_tune or not cfg.pretrained)

    def set_trainable(self, trainable: bool) -> None:
        """A frozen encoder gets no gradients and keeps its BatchNorm statistics."""
        self.trainable = trainable
        self.frozen_bn = False
        for p in self.body.parameters():
            p.requires_grad_(trainable)

    def stages(self, last: int) -> list[nn.Module]:
        """The last ``last`` residual stages (layer4, layer3, ...), the ones a fine-tuning stage opens."""
        return list(self.body.children())[-last:]

    def fine_tune_last(self, blocks: int) -> None:
        """Unfreeze the last ``blocks`` stages (S2's fine-tuning stage); BatchNorm statistics stay frozen."""
        self.set_trainable(False)
        self.trainable, self.frozen_bn = True, True
        for stage in self.stages(blocks):
            for p in stage.parameters():
                p.requires_grad_(True)

    def train(self, mode: bool = True) -> "ResNetEncoder":
        # A frozen CNN keeps its BatchNorm statistics: stay in eval mode.
        super().train(mode and self.trainable)
        if self.frozen_bn:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            return self.body(images)  # (batch, out_dim, h, w)
