"""Retrieval: the datastore never hands an image its own captions, the nearest-neighbour consensus picks
what it must, and retrieval_transformer meets every check the other captioners meet (teacher forcing =
stepping, batched beam = one image at a time, resume, a checkpoint alone captions new photographs,
ensembles)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from captionlab import decoding
from captionlab.captioner import load_checkpoint, read_model
from captionlab.config import EncoderConfig, ModelConfig, load_config
from captionlab.data.datastore import Datastore, pad_captions
from captionlab.errors import InputError
from captionlab.knn import NearestNeighbourCaptioner, consensus
from captionlab.metrics.cider import DocumentFrequency
from captionlab.models import CaptionModel, build_model
from captionlab.models.base import FeatureInput
from captionlab.training.trainer import train
from conftest import CONFIGS, TINY_DECODER

TINY = CONFIGS / "tiny" / "retrieval_transformer.yaml"


def unit_rows(n: int, d: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


# -- the datastore and the lookup ---------------------------------------------------------------------


def test_an_image_never_retrieves_itself_nor_its_exact_duplicate():
    feats = unit_rows(12)
    feats[5] = feats[4]  # one photograph filed twice
    store = Datastore()
    store.fill(feats, torch.zeros(12, 1, 1, dtype=torch.long))
    for random in (False, True):
        rows = store.nearest(feats, 3, random=random)  # (12, 3)
        assert not (rows == torch.arange(12)[:, None]).any()
        assert 5 not in rows[4].tolist() and 4 not in rows[5].tolist()
    near = store.nearest(feats + 0.05 * unit_rows(12, seed=1), 1, exclude_same=False)  # a query close to row i
    found = near[:, 0].tolist()
    assert found[:4] + found[6:] == [*range(4), *range(6, 12)] and {found[4], found[5]} <= {4, 5}
    assert not torch.equal(store.nearest(feats, 3), store.nearest(feats, 3, random=True))


def test_knn_consensus_picks_the_caption_its_neighbours_agree_on():
    feats = unit_rows(4)
    feats[1] = feats[0]  # a duplicated image with other captions
    captions = [
        ["a black dog runs on the grass", "a dog runs on the grass"],
        ["a dog runs on grass", "a child eats a cake"],
        ["a man rides a bike down the street", "a man on a bike"],
        ["two people sit on a bench", "people sitting on a bench in a park"],
    ]
    knn = NearestNeighbourCaptioner(feats, captions, k=2)
    out = knn.caption_features(torch.stack([feats[0], feats[2] + 0.01 * feats[3]]))
    assert out[0] == "a dog runs on the grass"  # of the 4 candidates of images 0 and 1: the one the others echo
    assert out[1] in captions[2] + captions[0] + captions[1] + captions[3]
    df = DocumentFrequency.from_references({i: c for i, c in enumerate(captions)})
    assert consensus(["a man on a bike", "a man rides a bike", "a man rides a red bike", "fish"], df) == 1


def test_captions_are_stored_without_start_cut_and_padded():
    out = pad_captions([[[1, 7, 8, 2], [1, 9, 2]], [[1, 5, 6, 7, 8, 9, 2]]], length=4, per_image=3)
    assert out.shape == (2, 3, 4)
    assert out[0, 0].tolist() == [7, 8, 2, 0] and out[0, 2].tolist() == [0, 0, 0, 0]
    assert out[1, 0].tolist() == [5, 6, 7, 8]


# -- the model on its own -----------------------------------------------------------------------------


def tiny_model(retrieval: str = "nearest", copy: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(
        name="retrieval_transformer",
        encoder=EncoderConfig(name="small_cnn", pretrained=False, frozen=True),
        grid_size=2,
        **TINY_DECODER,
        retrieval_k=3,
        retrieval=retrieval,
        retrieval_copy=copy,
    )
    model = build_model(cfg, 25).eval()
    g = torch.Generator().manual_seed(2)
    caps = [
        [[1, *torch.randint(4, 25, (3 + i % 5,), generator=g).tolist(), 2] for _ in range(1 + i % 5)] for i in range(10)
    ]
    model.fill_datastore(torch.randn(10, 4, model.encoder.out_dim, generator=g), pad_captions(caps, 10))
    return FeatureInput(model)


@pytest.mark.parametrize("copy", [False, True])
def test_teacher_forcing_equals_stepping_with_the_retrieved_captions(copy):
    model = tiny_model(copy=copy)
    feats = torch.randn(3, 4, model.model.encoder.out_dim)
    caps = torch.randint(4, 25, (6, 9), generator=torch.Generator().manual_seed(1))
    caps[:, 0] = 1
    with torch.no_grad():
        full = torch.log_softmax(model(feats, caps).float(), -1)
        assert torch.allclose(CaptionModel.forward_features(model.model, feats, caps), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("copy", [False, True])
def test_batched_beam_equals_one_image_at_a_time_and_attention_covers_the_regions(copy):
    model = tiny_model(copy=copy)
    feats = torch.randn(4, 4, model.model.encoder.out_dim)
    batched = decoding.beam_search(model, feats, beam_size=3, max_len=12)
    for i in range(4):
        one = decoding.beam_search(model, feats[i : i + 1], beam_size=3, max_len=12)
        n = one.tokens.size(1)
        assert torch.equal(batched.tokens[i, :n], one.tokens[0])
    assert batched.attention.shape[-1] == 4  # the 2x2 regions, not the retrieved words
    assert torch.allclose(batched.attention.sum(-1)[batched.tokens != 0], torch.tensor(1.0), atol=1e-5)


def test_the_retrieved_captions_change_what_the_model_writes():
    nearest, unrelated = tiny_model(), tiny_model("random")
    feats = torch.randn(4, 4, nearest.model.encoder.out_dim)
    caps = torch.tensor([[1, 5, 6, 7]]).repeat(4, 1)
    with torch.no_grad():
        assert not torch.allclose(nearest(feats, caps), unrelated(feats, caps))


def test_an_empty_datastore_and_an_encoder_that_trains_are_refused():
    cfg = load_config(TINY)
    with pytest.raises(RuntimeError, match="empty datastore"):
        build_model(cfg.model, 20)(torch.randn(1, 3, 96, 96), torch.tensor([[1, 4, 2]]))
    with pytest.raises(InputError, match="stays frozen"):
        load_config(TINY, ["model.encoder.frozen=false"])
    with pytest.raises(InputError, match="does not apply"):
        load_config(CONFIGS / "tiny" / "vit_transformer.yaml", ["model.retrieval_k=3"])


# -- trained ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def trained_retrieval(tmp_path_factory, synth_root):
    from conftest import trained_once

    return trained_once(tmp_path_factory, "retrieval", TINY, f"data.path={synth_root / 'tiny'}")


@pytest.mark.slow
def test_a_checkpoint_alone_captions_new_photographs_with_its_datastore(trained_retrieval):
    from skimage import data as skdata

    cfg, result = trained_retrieval
    captioner = load_checkpoint(result.run_dir / "best.pt", "cpu")
    store = captioner.model.store
    assert len(store) == 640 and store.captions.shape[1:] == (5, cfg.data.max_caption_len + 1)  # the train split
    photos = [Image.fromarray(skdata.chelsea()), Image.fromarray(skdata.coffee())]
    captions = captioner.caption(photos)
    assert all(isinstance(c, str) and c for c in captions)
    both = load_checkpoint([result.run_dir / "best.pt", result.run_dir / "last.pt"], "cpu")  # each its own datastore
    assert all(isinstance(c, str) and c for c in both.caption(photos))
    same = load_checkpoint([result.run_dir / "best.pt"] * 2, "cpu")
    assert same.caption(photos) == captions  # two equal members: the same probabilities
    assert result.best_metrics["CIDEr"] > 0.3  # it learns the synthetic scenes (3 epochs: 0.42)


@pytest.mark.slow
def test_resume_matches_an_uninterrupted_run(tmp_path, synth_root):
    common = [f"data.path={tmp_path / 'data'}", "data.synthetic_n=60", "train.batch_size=8"]
    straight = train(
        load_config(TINY, [*common, f"train.output_dir={tmp_path / 'a'}", "train.epochs=2"]), progress=False
    )
    train(load_config(TINY, [*common, f"train.output_dir={tmp_path / 'b'}", "train.epochs=1"]), progress=False)
    resumed = train(
        load_config(TINY, [*common, f"train.output_dir={tmp_path / 'b'}", "train.epochs=2"]),
        resume=True,
        progress=False,
    )
    a, _, _ = read_model(straight.run_dir / "last.pt")
    b, _, _ = read_model(resumed.run_dir / "last.pt")
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(x.float(), y.float(), atol=1e-6), k
    assert len(b.store) == 48  # the 60 images' train split


@pytest.mark.slow
def test_the_datastore_can_be_replaced_by_another_captioned_set_without_retraining(trained_retrieval, trained):
    from captionlab.data import load_dataset
    from captionlab.retrieval import replace_datastore

    cfg, result = trained_retrieval
    captioner = load_checkpoint(result.run_dir / "best.pt", "cpu")
    val = load_dataset(cfg.data).split("val")
    before = captioner.caption([r.path for r in val[:16]])
    relabelled = [type(r)(r.image_id, r.path, r.split, ["a big purple circle"]) for r in val]
    assert replace_datastore(captioner, relabelled) == len(val) == len(captioner.model.store)
    assert captioner.model.store.captions[:, 1:].eq(0).all()  # one caption an image now
    assert captioner.caption([r.path for r in val[:16]]) != before  # what it retrieves is what it reads
    with pytest.raises(InputError, match="retrieves nothing"):
        replace_datastore(load_checkpoint(trained[1].run_dir / "best.pt", "cpu"), val)
