"""Decoding throughput of the shared engine: batched beam search vs one image at a time.

Default: a CNN+GRU of the demo's size on random 64x64 images (the CNN included).
``--model show_attend_tell`` (or adaptive_attention): the demo-size attention model (ResNet-18 on
96x96 images, 3x3 grid, the CNN included); with ``--decoder-only`` the decoder alone on given region
features (7x7 grid of 512-d features), with ``--tiny`` the test-size decoder (3x3 grid, embedding 64,
hidden 128, attention 64). Batched vs one image at a time; the captions are compared. The last
columns say how close batched decoding runs to the machine's matrix-multiply peak (counted FLOPs of
the batched run over its time, against a plain matmul of about the LSTM cell's size): one image at a
time cannot be slower than the batched run by more than peak / its own rate allows.
``--coco-size``: vocabulary 9,490, embedding/hidden/attention 512, 14x14x2048 region features given
directly (no CNN), beam 5, every caption run to 20 words (<end> suppressed), random weights: prints
images/s of the batched decoder (also alone on its last line, "N images/s"), its counted GFLOP/s against
the machine's matmul peak, and checks on the CPU that its captions equal those of a reference: the
engine's beam search as it was before 2026-12-02 with the paper's tanh attention.
Usage: python benchmarks/decoding_speed.py [--model NAME] [--decoder-only [--tiny]] [--coco-size] [--device cpu|cuda]
       [--images 64]
"""

from __future__ import annotations

import argparse
import platform
import time
from unittest.mock import patch

import torch
from torch.utils.flop_counter import FlopCounterMode

from captionlab import decoding
from captionlab.config import EncoderConfig, ModelConfig
from captionlab.models import MODELS, attention, build_model
from captionlab.models.base import CaptionModel, FeatureInput, State

ATTENTION = ("show_attend_tell", "adaptive_attention")


def timed(fn, repeat: int = 3) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


class NoEnd(CaptionModel):
    """Suppresses <end>, so every caption runs to max_len (a fixed amount of work per image)."""

    def __init__(self, model: CaptionModel) -> None:
        super().__init__(model.vocab_size)
        self.model = model

    def init_state(self, x: torch.Tensor) -> State:
        return self.model.init_state(x)

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        logprobs, state = self.model.step(tokens, state)
        logprobs[:, self.end_id] = float("-inf")
        return logprobs, state


def flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def matmul_peak(rows: int, inner: int, outer: int, device: str) -> float:
    """GFLOP/s of one (rows x inner) @ (inner x outer) product, best of 50: what the machine allows."""
    a, b = torch.randn(rows, inner, device=device), torch.randn(inner, outer, device=device)
    return 2 * rows * inner * outer / timed(lambda: a @ b, 50) / 1e9


def machine(device: str) -> str:
    name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine()
    return f"device: {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}"


def reference_scores(keys: torch.Tensor, query: torch.Tensor, score: torch.nn.Linear, state: State) -> torch.Tensor:
    """Additive attention as the paper writes it, w . tanh(keys + query) + b, over the whole batch at once:
    what models/attention.py computed before 2026-12-02 (it now uses the sigmoid form, piece by piece)."""
    q = state.rows_view("image_keys", query).unsqueeze(2)  # (images, per_image, 1, A)
    return score(torch.tanh(keys.unsqueeze(1) + q)).squeeze(-1).flatten(0, 1)  # (rows, regions)


def reference_beam_search(model: CaptionModel, feats: torch.Tensor, k: int, max_len: int) -> torch.Tensor:
    """The engine's beam search before 2026-12-02, kept to check today's captions against: every one of
    the k beams runs the first step, and the greedy candidate is a second, separate decode."""
    greedy = decoding.greedy(model, feats, max_len)
    state = model.init_state(feats).expand(k)
    batch = feats.size(0)
    tokens = torch.full((batch * k,), model.start_id, dtype=torch.long)
    scores = torch.zeros(batch, k)
    scores[:, 1:] = float("-inf")
    seq = torch.empty(batch * k, 0, dtype=torch.long)
    seq_lp = torch.empty(batch * k, 0)
    offsets = (torch.arange(batch) * k).unsqueeze(1)
    for _ in range(max_len):  # <end> is suppressed: nothing finishes early
        logprobs, state = model.step(tokens, state)
        logprobs = decoding._no_unk(logprobs)
        vocab = logprobs.size(1)
        scores, flat = (scores.view(-1, 1) + logprobs).view(batch, k * vocab).topk(k, dim=1)
        origin = (offsets + flat // vocab).view(-1)
        tokens = (flat % vocab).view(-1)
        state = state.select(origin)
        seq = torch.cat([seq[origin], tokens.unsqueeze(1)], 1)
        seq_lp = torch.cat([seq_lp[origin], logprobs[origin, tokens].unsqueeze(1)], 1)
    best = offsets.squeeze(1) + scores.argmax(1)
    beam = decoding.DecodeOutput(seq[best], seq_lp[best], scores.max(1).values)
    return decoding._better(beam, greedy, 0.0, model.pad_id).tokens


def coco_size(a: argparse.Namespace) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(name=a.model, embed_dim=512, hidden_dim=512, attention_dim=512, dropout=0.0)
    model = NoEnd(FeatureInput(MODELS.get(a.model)(cfg, 9490, feature_dim=2048))).to(a.device).eval()
    feats = torch.randn(a.images, 196, 2048, device=a.device)
    with torch.no_grad():
        out = decoding.beam_search(model, feats, beam_size=5, max_len=20)
        assert out.tokens.size(1) == 20 and (out.tokens != model.end_id).all()
        seconds = timed(lambda: decoding.beam_search(model, feats, beam_size=5, max_len=20), a.repeat)
        work = flops(lambda: decoding.beam_search(model, feats, beam_size=5, max_len=20))
        if a.device == "cpu":
            with patch.object(attention, "additive_scores", reference_scores):
                same = torch.equal(reference_beam_search(model, feats, 5, 20), out.tokens)
            assert same, "the captions differ from the reference beam search with tanh attention"
    peak = matmul_peak(a.images * 5, 2560, 2048, a.device)  # the LSTM cell's product at beam 5
    print(
        machine(a.device) + f"; {a.model}, COCO size: vocab 9490, 512/512/512, 14x14x2048 features, "
        f"beam 5, 20 words, {a.images} images, best of {a.repeat}"
    )
    print(f"matrix-multiply peak: {peak:.0f} GFLOP/s ({a.images * 5} x 2560 @ 2560 x 2048, the LSTM cell's product)")
    rate = work / seconds / 1e9
    checked = "same as the reference" if a.device == "cpu" else "not compared on this device"
    print("| decoder | images/s | GFLOP/s | of peak | captions |\n|---|---|---|---|---|")
    print(f"| {a.model} batched beam 5 | {a.images / seconds:.1f} | {rate:.0f} | {rate / peak:.0%} | {checked} |")
    print(f"{a.images / seconds:.1f} images/s")


def batched_vs_single(a: argparse.Namespace) -> None:
    torch.manual_seed(0)
    if a.model in ATTENTION and not a.decoder_only:
        cfg = ModelConfig(
            name=a.model,
            encoder=EncoderConfig(name="resnet18", pretrained=False),
            grid_size=3,
            embed_dim=128,
            hidden_dim=256,
            attention_dim=128,
            dropout=0.0,
        )
        model = build_model(cfg, vocab_size=60).to(a.device).eval()
        inputs = torch.randn(a.images, 3, 96, 96, device=a.device)
        what = "ResNet-18 on 96x96 images, 3x3 grid + decoder"
    elif a.model in ATTENTION:
        e, h, att, grid = (64, 128, 64, 3) if a.tiny else (128, 256, 256, 7)
        cfg = ModelConfig(name=a.model, embed_dim=e, hidden_dim=h, attention_dim=att, dropout=0.0)
        model = FeatureInput(MODELS.get(a.model)(cfg, 60, feature_dim=512)).to(a.device).eval()
        inputs = torch.randn(a.images, grid * grid, 512, device=a.device)  # a grid of ResNet-18 features
        what = f"decoder on given {grid}x{grid}x512 region features, embedding {e}, hidden {h}, attention {att}"
    else:
        cfg = ModelConfig(
            name=a.model,
            encoder=EncoderConfig(name="resnet18", pretrained=False),
            embed_dim=128,
            hidden_dim=256,
            dropout=0.0,
        )
        model = build_model(cfg, vocab_size=60).to(a.device).eval()
        inputs = torch.randn(a.images, 3, 64, 64, device=a.device)
        what = "ResNet-18 on 64x64 images + decoder"
    print(machine(a.device) + f"; {a.model} ({what}), vocab 60, {a.images} images, max_len {a.max_len}")
    peak = matmul_peak(a.images * 5, 512 + 256, 4 * 256, a.device)  # about an LSTM cell's product at beam 5
    print(f"matrix-multiply peak: {peak:.0f} GFLOP/s ({a.images * 5} x 768 @ 768 x 1024)")
    print("| decoder | batched img/s | one-by-one img/s | speed-up | same captions | batched GFLOP/s | of peak |")
    print("|---|---|---|---|---|---|---|")
    for name, k in (("greedy", 1), ("beam 3", 3), ("beam 5", 5)):
        with torch.no_grad():
            together = decoding.decode(model, inputs, k, a.max_len).tokens
            alone = [decoding.decode(model, inputs[i : i + 1], k, a.max_len).tokens[0] for i in range(a.images)]
            same = all(torch.equal(together[i, : len(t)], t) for i, t in enumerate(alone))
            batched = timed(lambda k=k: decoding.decode(model, inputs, k, a.max_len), a.repeat)
            single = timed(  # best of the same number of runs as the batched arm
                lambda k=k: [decoding.decode(model, inputs[i : i + 1], k, a.max_len) for i in range(a.images)], a.repeat
            )
            rate = flops(lambda k=k: decoding.decode(model, inputs, k, a.max_len)) / batched / 1e9
        print(
            f"| {name} | {a.images / batched:.0f} | {a.images / single:.0f} | {single / batched:.1f}x | {same} "
            f"| {rate:.0f} | {rate / peak:.0%} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="cnn_gru", choices=["cnn_gru", "show_tell", *ATTENTION])
    ap.add_argument("--coco-size", action="store_true")
    ap.add_argument("--decoder-only", action="store_true", help="attention models: time the decoder on given features")
    ap.add_argument("--tiny", action="store_true", help="with --decoder-only: the test-size decoder on a 3x3 grid")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    if a.tiny and not (a.decoder_only and a.model in ATTENTION):
        ap.error("--tiny is for an attention model's --decoder-only run")
    if a.coco_size:
        if a.model not in ATTENTION:
            ap.error("--coco-size is for the attention models")
        coco_size(a)
    else:
        batched_vs_single(a)


if __name__ == "__main__":
    main()
