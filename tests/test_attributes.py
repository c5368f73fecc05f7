"""Per-attribute accuracy on the synthetic set: the parser reads the synthesiser's own captions
perfectly, a seeing model beats the blind floor, and a blind model does not."""

from __future__ import annotations

import pytest

from captionlab import load_checkpoint
from captionlab.data import load_dataset
from captionlab.evaluation import caption_records
from captionlab.metrics.attributes import attribute_accuracy, parse_caption


def test_parser_reads_every_template_of_the_synthesiser(synth_root, tiny_cfg_factory, tmp_path):
    ds = load_dataset(tiny_cfg_factory(tmp_path).data)
    records = ds.split("train")
    for j in range(5):  # each of the five reference captions, over all training images
        caps = {r.image_id: r.captions[j] for r in records if len(r.captions) > j}
        acc = attribute_accuracy(caps, records)["accuracy"]
        assert acc["colour"] == acc["shape"] == acc["size"] == acc["position"] == 1.0, (j, acc)
        assert acc["count"] >= 0.8  # "the picture shows A and B" names two of three objects


def test_parser_handles_plurals_relations_and_stated_counts():
    p = parse_caption("two yellow stars to the left of a big red disc")
    assert p["colour"] == ["yellow", "yellow", "red"] and p["shape"] == ["star", "star", "circle"]
    assert p["position"] == [] and p["count"] == 2  # "to the left of" is a relation; the count word wins
    assert parse_caption("a single blue box in the top right corner")["position"] == [(0, 2)]
    assert parse_caption("a green star on the left side")["position"] == [(1, 0)]


@pytest.mark.slow
def test_seeing_model_beats_the_blind_floor_and_the_blind_model_does_not(trained, trained_blind):
    def accuracy(cfg, result):
        captioner = load_checkpoint(result.run_dir / "best.pt", "cpu")
        records = load_dataset(cfg.data).split("test")
        return attribute_accuracy(caption_records(captioner, records, 3, 16, progress=False), records)

    seeing, blind = accuracy(*trained), accuracy(*trained_blind)
    assert seeing["accuracy"]["overall"] > seeing["blind_floor"]["overall"] + 0.15, seeing
    assert seeing["accuracy"]["count"] > seeing["blind_floor"]["count"] + 0.2, (
        seeing
    )  # tiny models learn "how many" first
    assert abs(blind["accuracy"]["overall"] - blind["blind_floor"]["overall"]) < 0.08, blind
    assert seeing["accuracy"]["overall"] > blind["accuracy"]["overall"] + 0.15


def test_recall_marks_down_a_caption_that_states_less():
    """Accuracy is precision: "a circle" and "a small red circle at the top left" both score 1.0 on
    what they state; recall says which one describes the scene."""
    from captionlab.metrics.attributes import score_attributes

    scene = [{"colour": "red", "shape": "circle", "size": "small", "position": (0, 0)}]
    terse, full = (score_attributes([c], [scene]) for c in ("a circle", "a small red circle at the top left"))
    assert terse[0]["shape"] == full[0]["shape"] == 1.0 and terse[0]["colour"] == 0.0  # states no colour
    assert terse[1]["colour"] == terse[1]["size"] == terse[1]["position"] == 0.0
    assert full[1]["colour"] == full[1]["size"] == full[1]["position"] == full[1]["shape"] == 1.0
    assert full[1]["overall"] > terse[1]["overall"]
