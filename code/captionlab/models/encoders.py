"""Image encoders. A CNN gives a feature map (global models pool it, attention models keep a grid of
regions); a ViT gives patch tokens. Pretrained weights come from a local file or torchvision's cache."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
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
VITS = {  # builder, weights, patch size
    "vit_b_16": (tvm.vit_b_16, tvm.ViT_B_16_Weights.IMAGENET1K_V1),
    "vit_b_32": (tvm.vit_b_32, tvm.ViT_B_32_Weights.IMAGENET1K_V1),
    "vit_tiny": (None, None),  # DeiT-tiny sized, random init only: tests and the synthetic set
}


def is_vit(name: str) -> bool:
    return name in VITS


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights are not on disk; the message says which file to put where."""


def torchvision_cache_path(name: str) -> tuple[Path, str]:
    """Where torchvision would cache ``name``'s ImageNet weights, and the URL it would fetch them from."""
    url = {**RESNETS, **VITS}[name][1].url
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
                f"set model.encoder.pretrained=false."
            )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state


def load_checked(net: nn.Module, state: dict[str, torch.Tensor], name: str, head: str) -> None:
    """Load pretrained weights, allowing only the classifier (``head``) to be absent."""
    missing, unexpected = net.load_state_dict({k: v for k, v in state.items() if not k.startswith(head)}, strict=False)
    if [k for k in missing if not k.startswith(head)] or unexpected:
        raise ValueError(
            f"{name} weights do not match the architecture: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


class StagedEncoder(nn.Module):
    """What every image encoder offers the trainer: frozen or trainable as a whole, or only its last
    ``stages`` opened (the fine-tuning stage), with BatchNorm statistics kept frozen meanwhile. A
    frozen encoder stays in eval mode (no dropout, no BatchNorm updates)."""

    trainable = False
    frozen_bn = False

    def stages(self, last: int) -> list[nn.Module]:
        raise NotImplementedError

    def set_trainable(self, trainable: bool) -> None:
        self.trainable, self.frozen_bn = trainable, False
        for p in self.parameters():
            p.requires_grad_(trainable)

    def fine_tune_last(self, blocks: int) -> None:
        """Unfreeze the last ``blocks`` stages (S2's fine-tuning stage); BatchNorm statistics stay frozen."""
        self.set_trainable(False)
        self.trainable, self.frozen_bn = True, True
        for stage in self.stages(blocks):
            for p in stage.parameters():
                p.requires_grad_(True)

    def train(self, mode: bool = True) -> StagedEncoder:
        super().train(mode and self.trainable)
        if self.frozen_bn:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self


class ResNetEncoder(StagedEncoder):
    """torchvision ResNet without its classifier: images (B, 3, H, W) -> feature map (B, C, H/32, W/32)."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        if cfg.name not in RESNETS:
            raise ValueError(f"unknown encoder {cfg.name!r}; choose one of {', '.join(RESNETS)}")
        net = RESNETS[cfg.name][0](weights=None)
        if cfg.pretrained:
            load_checked(net, load_pretrained_state(cfg), cfg.name, "fc.")
        self.out_dim: int = net.fc.in_features
        self.body = nn.Sequential(*list(net.children())[:-2])
        # Randomly initialised weights must be trained; pretrained ones only when asked.
        self.set_trainable(cfg.fine_tune or not cfg.pretrained)

    def stages(self, last: int) -> list[nn.Module]:
        """The last ``last`` residual stages (layer4, layer3, ...), the ones a fine-tuning stage opens."""
        return list(self.body.children())[-last:]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            return self.body(images)  # (batch, out_dim, h, w)


class ViTEncoder(StagedEncoder):
    """torchvision ViT without its head: images (B, 3, H, W) -> patch tokens (B, (H/p)*(W/p), D).

    The class token is dropped: captioners attend over patches, which form the square grid the
    heat-maps and the grounding rate need. Position embeddings are built for ``encoder.image_size``
    and interpolated for other input sizes (as when a 224-px checkpoint meets 384-px images)."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        builder, weights = VITS[cfg.name]
        if builder is None:
            if cfg.pretrained:
                raise ValueError(f"{cfg.name} has no pretrained weights: set model.encoder.pretrained=false")
            net = tvm.VisionTransformer(
                cfg.image_size, patch_size=16, num_layers=4, num_heads=3, hidden_dim=192, mlp_dim=768
            )
        else:
            net = builder(weights=None)  # built at 224 px, as the weights are
            if cfg.pretrained:
                state = load_pretrained_state(cfg)
                load_checked(net, state, cfg.name, "heads.")
            if cfg.image_size != net.image_size:
                pos = _resize_positions(net.encoder.pos_embedding.data, cfg.image_size // net.patch_size)
                net.encoder.pos_embedding = nn.Parameter(pos)
                net.image_size = cfg.image_size
        self.net = net
        self.patch = net.patch_size
        self.out_dim: int = net.hidden_dim
        self.set_trainable(cfg.fine_tune or not cfg.pretrained)

    def stages(self, last: int) -> list[nn.Module]:
        """The last ``last`` transformer blocks (and the final norm, which they feed)."""
        return [*list(self.net.encoder.layers)[-last:], self.net.encoder.ln]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            x = self.net.conv_proj(images)  # (B, D, H/p, W/p)
            grid = x.shape[-2:]
            x = x.flatten(2).transpose(1, 2)  # (B, patches, D)
            cls = self.net.class_token.expand(x.size(0), -1, -1)
            pos = self.net.encoder.pos_embedding
            if pos.size(1) != x.size(1) + 1:
                pos = _resize_positions(pos, grid)
            x = self.net.encoder.dropout(torch.cat([cls, x], 1) + pos)
            x = self.net.encoder.ln(self.net.encoder.layers(x))  # (B, 1 + patches, D)
            return x[:, 1:]


def _resize_positions(pos: torch.Tensor, grid: int | tuple[int, int]) -> torch.Tensor:
    """(1, 1 + g*g, D) position embeddings -> (1, 1 + h*w, D), bicubic over the patch grid."""
    h, w = (grid, grid) if isinstance(grid, int) else tuple(grid)
    cls, patches = pos[:, :1], pos[:, 1:]
    g = int(round(patches.size(1) ** 0.5))
    patches = patches.reshape(1, g, g, -1).permute(0, 3, 1, 2)  # (1, D, g, g)
    patches = F.interpolate(patches, size=(h, w), mode="bicubic", align_corners=False)
    return torch.cat([cls, patches.permute(0, 2, 3, 1).reshape(1, h * w, -1)], 1)


def build_encoder(cfg: EncoderConfig) -> nn.Module:
    """A ResNet (feature map) or a ViT (patch tokens), by ``encoder.name``."""
    return ViTEncoder(cfg) if is_vit(cfg.name) else ResNetEncoder(cfg)
