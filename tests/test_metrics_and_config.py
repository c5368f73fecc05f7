"""Reference metrics against hand-computed values, and run configuration."""

from __future__ import annotations

import json
import math

import pytest

from captionlab.config import RunConfig, load_config
from captionlab.metrics import score, score_files
from conftest import CONFIGS

# Two images with disjoint vocabularies, so every n-gram has document frequency 1 of 2.
RESULTS = {1: "a b c d", 2: "w x y z"}
REFS = {1: ["a b e f"], 2: ["w x y z"]}


@pytest.mark.parametrize("tokenizer", ["simple", "ptb"])
def test_scores_match_hand_computed_values(tokenizer):
    s = score(RESULTS, REFS, ("Bleu", "ROUGE_L", "CIDEr"), tokenizer)
    # BLEU is corpus-level: clipped n-gram matches over both images
    assert s["Bleu_1"] == pytest.approx((2 + 4) / 8, abs=1e-6)
    assert s["Bleu_2"] == pytest.approx(math.sqrt(6 / 8 * 4 / 6), abs=1e-6)
    assert s["Bleu_4"] == pytest.approx((6 / 8 * 4 / 6 * 2 / 4 * 1 / 2) ** 0.25, abs=1e-6)
    # ROUGE-L: LCS 2 of 4 (P = R = 0.5) for image 1, exact match for image 2
    assert s["ROUGE_L"] == pytest.approx((0.5 + 1.0) / 2, abs=1e-6)
    # CIDEr-D: identical caption -> 10; image 1 shares only "a", "b" and "a b" with its reference
    idf = math.log(2.0)
    cos1 = 2 * idf**2 / (4 * idf**2)  # unigrams: 2 of 4 shared, equal tf-idf weights
    cos2 = 1 * idf**2 / (3 * idf**2)  # bigrams: 1 of 3 shared
    expected1 = 10 * (cos1 + cos2) / 4
    assert s["CIDEr"] == pytest.approx((expected1 + 10.0) / 2, abs=1e-6)


def test_punctuation_and_case_do_not_change_scores():
    a = score({1: "A b, c d.", 2: "W x y z!"}, REFS, ("Bleu", "CIDEr"), "ptb")
    b = score(RESULTS, REFS, ("Bleu", "CIDEr"), "ptb")
    assert a == pytest.approx(b)


def test_meteor_ranks_exact_above_partial_above_unrelated():
    refs = {1: ["a red circle on the left"], 2: ["a blue square at the top"], 3: ["two green stars"]}
    s = score(
        {1: "a red circle on the left", 2: "a blue box", 3: "an elephant eating"},
        refs,
        ("METEOR",),
        "ptb",
        per_image=True,
    )
    per = s["per_image"]
    assert per[1]["METEOR"] > per[2]["METEOR"] > per[3]["METEOR"] == 0.0
    assert 0 < s["METEOR"] < 1
    from captionlab.metrics.coco import meteor

    first = meteor()  # one Java process per Python process, reused by every score (it was one per call)
    assert score(RESULTS, REFS, ("METEOR",), "ptb") == score(RESULTS, REFS, ("METEOR",), "ptb")
    assert meteor() is first
    first.meteor_p.kill()
    first.meteor_p.wait()
    assert meteor() is not first and meteor().meteor_p.poll() is None  # a dead one is restarted


def test_results_without_references_are_an_error():
    with pytest.raises(ValueError, match="have no references"):
        score({9: "x"}, REFS, ("Bleu",), "simple")


def test_score_files_reads_coco_formats(tmp_path):
    (tmp_path / "res.json").write_text(json.dumps([{"image_id": k, "caption": v} for k, v in RESULTS.items()]))
    ann = {
        "images": [{"id": 1}, {"id": 2}, {"id": 3}],
        "annotations": [{"image_id": k, "caption": c} for k, v in REFS.items() for c in v]
        + [{"image_id": 3, "caption": "not scored"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    with pytest.warns(UserWarning, match="1 annotated image"):
        s = score_files(tmp_path / "res.json", tmp_path / "ann.json", ("Bleu", "ROUGE_L", "CIDEr"), "simple")
    assert s == pytest.approx(score(RESULTS, REFS, ("Bleu", "ROUGE_L", "CIDEr"), "simple"))


def test_duplicate_result_ids_are_rejected(tmp_path):
    (tmp_path / "res.json").write_text(json.dumps([{"image_id": 1, "caption": "a"}, {"image_id": 1, "caption": "b"}]))
    (tmp_path / "ann.json").write_text(json.dumps({"annotations": [{"image_id": 1, "caption": "a"}]}))
    with pytest.raises(ValueError, match="appears twice"):
        score_files(tmp_path / "res.json", tmp_path / "ann.json")


def test_config_overrides_and_round_trip():
    cfg = load_config(
        CONFIGS / "tiny" / "cnn_gru.yaml",
        ["train.epochs=2", "model.encoder.name=resnet50", "decode.length_penalty=0.7"],
    )
    assert (cfg.train.epochs, cfg.model.encoder.name, cfg.decode.length_penalty) == (2, "resnet50", 0.7)
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


def test_a_list_of_words_and_yaml_s_on_read_as_true():
    cfg = load_config(CONFIGS / "tiny" / "cnn_gru.yaml", ['decode.bad_endings=[a, the, "on"]'])
    assert cfg.decode.bad_endings == ["a", "the", "on"]
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"decode.bad_endings\[2\] = True: .*YAML reads on, off, yes and no"):
        load_config(CONFIGS / "tiny" / "cnn_gru.yaml", ["decode.bad_endings=[a, the, on]"])


def test_unknown_config_key_is_named():
    with pytest.raises(ValueError, match="unknown config key 'train.epoch'"):
        load_config(CONFIGS / "tiny" / "cnn_gru.yaml", ["train.epoch=2"])


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_config_loads(path):
    from captionlab.models import MODELS, TOWERS

    cfg = load_config(path)
    assert cfg.model.name in MODELS or cfg.model.name in TOWERS


def test_the_dual_encoder_is_registered_apart_from_the_captioners():
    from captionlab.models import MODELS, TOWERS, CaptionModel, TrainableModel

    assert "dual_encoder" in TOWERS and "dual_encoder" not in MODELS  # nothing that decodes can pick it up
    assert all(issubclass(MODELS.get(n), CaptionModel) for n in MODELS.names())
    assert not issubclass(TOWERS.get("dual_encoder"), CaptionModel)
    assert issubclass(TOWERS.get("dual_encoder"), TrainableModel)


def test_spice_without_corenlp_names_the_jars_and_downloads_nothing(monkeypatch):
    import urllib.request
    from pathlib import Path

    import pycocoevalcap.spice

    from captionlab.metrics import score
    from captionlab.weights import MissingWeightsError

    lib = Path(pycocoevalcap.spice.__file__).parent / "lib"
    if (lib / "stanford-corenlp-3.6.0-models.jar").is_file():
        pytest.skip(f"Stanford CoreNLP is installed in {lib}")

    def no_download(*args, **kwargs):
        raise AssertionError("SPICE started its CoreNLP download")

    import pycocoevalcap.spice.get_stanford_models as fetch

    monkeypatch.setattr(urllib.request, "urlretrieve", no_download)
    monkeypatch.setattr(fetch, "urlretrieve", no_download)  # imported by name there
    with pytest.raises(MissingWeightsError, match=r"stanford-corenlp-3\.6\.0-models\.jar .* into .*spice/lib"):
        score({1: "a dog"}, {1: ["a dog runs"]}, ("SPICE",), tokenizer="simple")


@pytest.mark.parametrize(
    "config, override, words",
    [
        ("vit_transformer.yaml", "train.val_max_len=41", "train.val_max_len (41) is longer than model.max_positions"),
        ("vit_transformer.yaml", "model.num_heads=3", "must be divisible by model.num_heads (3)"),
        ("vit_transformer.yaml", "data.max_caption_len=45", "data.max_caption_len (45) needs 46 positions"),
        ("cnn_gru.yaml", "train.fine_tune_from_epoch=2", "needs a frozen pretrained encoder"),
        ("cnn_gru.yaml", "train.loss=contrastive", "contrastive pre-training goes with model.name=dual_encoder"),
        ("pretrain.yaml", "data.max_caption_len=60", "needs 62 positions"),
        # keys that do not apply to the model, data format or loss chosen are refused, not ignored
        ("adaptive.yaml", "model.cell=gru", "model.cell does not apply to model.name=adaptive_attention"),
        ("adaptive.yaml", "model.region_dim=64", "model.region_dim does not apply to model.name=adaptive_attention"),
        ("cnn_gru.yaml", "model.num_heads=4", "model.num_heads does not apply to model.name=cnn_gru"),
        ("cnn_gru.yaml", "data.test_fraction=0.3", "data.test_fraction does not apply to data.format=synthetic"),
        ("cnn_gru.yaml", "train.scst_samples=3", "train.scst_samples does not apply here: it needs train.loss=scst"),
        ("cnn_gru.yaml", "model.pretrained_from=x.pt", "model.pretrained_from does not apply to model.name=cnn_gru"),
        # names come from the registries (losses, rewards), checked as early as the fixed choices were
        ("cnn_gru.yaml", "train.loss=bogus", "train.loss = 'bogus': expected one of: contrastive, scst, xe"),
        ("scst.yaml", "train.scst_reward=CIDEr,SPICE", "train.scst_reward: unknown reward 'SPICE'"),
    ],
)
def test_rules_across_keys_are_checked_before_any_data_or_run_folder_is_made(tmp_path, capsys, config, override, words):
    """Each of these used to pass the config check and fail later: after synthesising the data, or (val_max_len)
    after a whole epoch of training."""
    from captionlab.cli import main

    data, runs = tmp_path / "data", tmp_path / "runs"
    code = main(["train", str(CONFIGS / "tiny" / config), f"data.path={data}", f"train.output_dir={runs}", override])
    err = capsys.readouterr().err
    assert code != 0 and words in err and err.strip().count("\n") == 0, err
    assert not data.exists() and not runs.exists()  # nothing generated, nothing written
