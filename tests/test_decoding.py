"""The shared decoding engine, checked against brute force on a toy model and on real captioners."""

from __future__ import annotations

import pytest
import torch

from captionlab import decoding
from captionlab.config import EncoderConfig, ModelConfig
from captionlab.errors import InputError
from captionlab.models import CaptionModel, build_model
from toy import MarkovCaptioner, best_by_enumeration

KINDS = torch.arange(4).view(4, 1)


def _trim(row: torch.Tensor, end_id: int = 2) -> list[int]:
    out = []
    for t in row.tolist():
        if t == 0:
            break
        out.append(t)
        if t == end_id:
            break
    return out


@pytest.mark.parametrize("seed", range(5))
def test_exhaustive_beam_finds_the_most_probable_caption(seed):
    model = MarkovCaptioner(seed=seed)
    max_len = 4
    out = decoding.beam_search(model, KINDS, beam_size=64, max_len=max_len)  # 4**3 prefixes: exhaustive
    for kind in range(4):
        best, best_lp = best_by_enumeration(model, kind, max_len)
        assert _trim(out.tokens[kind]) == best
        assert out.scores[kind].item() == pytest.approx(best_lp, abs=1e-4)


@pytest.mark.parametrize("seed", range(5))
def test_beam_size_one_equals_greedy(seed):
    model = MarkovCaptioner(seed=seed)
    g = decoding.greedy(model, KINDS, max_len=8)
    b = decoding.beam_search(model, KINDS, beam_size=1, max_len=8)
    assert torch.equal(g.tokens, b.tokens)
    assert torch.allclose(g.scores, b.scores)


def test_scores_are_the_summed_token_logprobs_of_the_returned_caption():
    model = MarkovCaptioner(seed=3)
    out = decoding.beam_search(model, KINDS, beam_size=3, max_len=6)
    for kind in range(4):
        assert out.scores[kind].item() == pytest.approx(model.sequence_logprob(kind, _trim(out.tokens[kind])), abs=1e-4)
        assert out.logprobs[kind].sum().item() == pytest.approx(out.scores[kind].item(), abs=1e-4)


def test_greedy_and_beam_never_choose_unk_and_report_the_models_own_logprobs():
    model = MarkovCaptioner(seed=1)
    model.table[:, :, model.unk_id] = 5.0  # <unk> is by far the likeliest next token everywhere
    for out in (decoding.greedy(model, KINDS, max_len=6), decoding.beam_search(model, KINDS, beam_size=3, max_len=6)):
        assert not (out.tokens == model.unk_id).any()
        for kind in range(4):
            assert out.logprobs[kind].sum().item() == pytest.approx(
                model.sequence_logprob(kind, _trim(out.tokens[kind])), abs=1e-4
            )


def test_nothing_follows_end_and_lengths_count_it():
    model = MarkovCaptioner(seed=1)
    for out in (decoding.greedy(model, KINDS, 10), decoding.beam_search(model, KINDS, 3, 10)):
        for row, n in zip(out.tokens, out.lengths):
            ids = row.tolist()
            if 2 in ids:
                end = ids.index(2)
                assert all(t == 0 for t in ids[end + 1 :])
                assert n == end + 1


@pytest.mark.parametrize("seed", range(5))
def test_length_penalty_picks_the_best_normalised_caption(seed):
    """Exhaustive beam with alpha = 2 returns what enumeration ranks first by log-probability over the
    length penalty; and that differs from the alpha = 0 choice somewhere, so ignoring alpha fails."""
    model, max_len = MarkovCaptioner(seed=seed), 4
    plain = decoding.beam_search(model, KINDS, beam_size=64, max_len=max_len, alpha=0.0)
    long = decoding.beam_search(model, KINDS, beam_size=64, max_len=max_len, alpha=2.0)
    changed = 0
    for kind in range(4):
        best, _ = best_by_enumeration(model, kind, max_len, alpha=2.0)
        assert _trim(long.tokens[kind]) == best
        changed += _trim(plain.tokens[kind]) != best
    assert (long.lengths >= plain.lengths).all()
    if seed == 4:
        assert changed > 0  # this toy's most probable captions are short: the penalty must change some


def test_attention_follows_the_chosen_beam():
    model = MarkovCaptioner(seed=2, attend=True)
    out = decoding.beam_search(model, KINDS, beam_size=3, max_len=5)
    assert out.attention is not None and out.attention.shape[:2] == out.tokens.shape
    # the toy's attention at step t records the token fed at t, i.e. the previous output
    prev = torch.cat([torch.full((4, 1), model.start_id), out.tokens[:, :-1]], 1)
    assert torch.equal(out.attention[:, :, 0].long(), prev)


def test_sampling_respects_top_k_and_is_reproducible():
    model = MarkovCaptioner(seed=0)
    a = decoding.sample(model, KINDS.repeat(8, 1), 6, top_k=1, generator=torch.Generator().manual_seed(0))
    g = decoding.greedy(model, KINDS.repeat(8, 1), 6)
    assert torch.equal(a.tokens, g.tokens)  # top-1 sampling is greedy
    s1 = decoding.sample(model, KINDS.repeat(8, 1), 6, generator=torch.Generator().manual_seed(5))
    s2 = decoding.sample(model, KINDS.repeat(8, 1), 6, generator=torch.Generator().manual_seed(5))
    assert torch.equal(s1.tokens, s2.tokens)


def test_top_p_keeps_only_the_nucleus():
    model = MarkovCaptioner(seed=0)
    out = decoding.sample(model, KINDS.repeat(16, 1), 1, top_p=1e-6, generator=torch.Generator().manual_seed(1))
    first = model.table[KINDS.repeat(16, 1).view(-1), model.start_id]
    first = first.index_fill(-1, torch.tensor([model.unk_id]), float("-inf")).argmax(-1)  # <unk> is never drawn
    assert torch.equal(out.tokens[:, 0], first)


def _tiny_model(name: str, seed: int = 0):
    torch.manual_seed(seed)
    cfg = ModelConfig(
        name=name,
        encoder=EncoderConfig(name="resnet18", pretrained=False),
        embed_dim=16,
        hidden_dim=24,
        num_layers=2,
        dropout=0.0,
    )
    return build_model(cfg, vocab_size=12).eval()


@pytest.mark.parametrize("name", ["cnn_gru", "show_tell"])
def test_teacher_forcing_agrees_with_stepping(name):
    model = _tiny_model(name)
    images = torch.randn(3, 3, 32, 32)
    captions = torch.randint(3, 12, (3, 7))
    captions[:, 0] = model.start_id
    with torch.no_grad():
        fast = torch.log_softmax(model(images, captions), -1)
        slow = torch.log_softmax(CaptionModel.forward_features(model, model.encode(images), captions), -1)  # steps
    assert torch.allclose(fast, slow, atol=1e-5)


@pytest.mark.parametrize("name", ["cnn_gru", "show_tell"])
def test_several_captions_per_image_share_one_encoding(name):
    model = _tiny_model(name)
    images = torch.randn(2, 3, 32, 32)
    captions = torch.randint(3, 12, (6, 5))
    captions[:, 0] = model.start_id
    with torch.no_grad():
        grouped = model(images, captions)  # 3 captions per image
        one_by_one = model(images.repeat_interleave(3, 0), captions)
    assert torch.allclose(grouped, one_by_one, atol=1e-5)


@pytest.mark.parametrize("name", ["cnn_gru", "show_tell"])
def test_batched_beam_search_matches_decoding_each_image_alone(name):
    model = _tiny_model(name, seed=1)
    images = torch.randn(5, 3, 32, 32)
    batched = decoding.beam_search(model, images, beam_size=3, max_len=8)
    for i in range(5):
        alone = decoding.beam_search(model, images[i : i + 1], beam_size=3, max_len=8)
        assert _trim(batched.tokens[i]) == _trim(alone.tokens[0])
        assert batched.scores[i].item() == pytest.approx(alone.scores[0].item(), abs=1e-4)


def _trap_model() -> MarkovCaptioner:
    """<start> -> "a" .40 | "the" .35 | "there" .25; "a" -> "x" .30 (then surely <end>) or four
    others; "the" -> "y" .5 | "z" .5, after which every word is equally likely. Beam 2 keeps
    "the y", "the z" (.175 each) over greedy's "a x" (.12) and ends far below greedy's caption."""
    model = MarkovCaptioner(vocab_size=10, kinds=1)
    start, end, unk, a, the, there, x, y, z = 1, 2, 3, 4, 5, 6, 7, 8, 9
    probs = torch.full((10, 10), 1e-9)
    probs[start, [a, the, there]] = torch.tensor([0.40, 0.35, 0.25])
    probs[a, [x, unk, there, y, z]] = torch.tensor([0.30, 0.175, 0.175, 0.175, 0.175])
    probs[x, end] = 1.0
    probs[the, [y, z]] = 0.5
    for row in (unk, there, y, z):
        probs[row, [end, unk, a, the, there, x, y, z]] = 1 / 8
    model.table[0] = probs.log()
    return model


def test_beam_search_keeps_the_greedy_caption_as_a_candidate():
    model = _trap_model()
    kind = torch.zeros(1, 1)
    g = decoding.greedy(model, kind, 4)
    plain = decoding.beam_search(model, kind, beam_size=2, max_len=4, keep_greedy=False)
    kept = decoding.beam_search(model, kind, beam_size=2, max_len=4)
    assert plain.scores.item() < g.scores.item()  # plain beam search lost the greedy path
    assert torch.equal(kept.tokens[:, : g.tokens.size(1)], g.tokens) and kept.scores.item() == pytest.approx(
        g.scores.item()
    )


def _first_word_distribution(model: MarkovCaptioner, kind: int, temperature: float = 1.0, top_p: float = 1.0):
    """What the sampler should draw first for an image of ``kind``, written out: the model's scores over
    every word but <unk>, divided by the temperature, cut to the smallest set whose mass reaches top_p."""
    logits = torch.log_softmax(model.table[kind, model.start_id], -1).clone()
    logits[model.unk_id] = float("-inf")
    p = torch.softmax(logits / temperature, -1)
    order = p.argsort(descending=True)
    keep = (p[order].cumsum(0) - p[order]) < top_p  # a word stays while the mass before it is below top_p
    q = torch.zeros_like(p)
    q[order[keep]] = p[order[keep]]
    return q / q.sum()


@pytest.mark.parametrize("temperature, top_p", [(0.5, 1.0), (2.0, 1.0), (1.0, 0.6), (1.5, 0.8)])
def test_sampling_draws_from_the_tempered_nucleus(temperature, top_p):
    model, n = MarkovCaptioner(seed=3), 20_000
    out = decoding.sample(
        model, torch.zeros(n, 1), 1, temperature=temperature, top_p=top_p, generator=torch.Generator().manual_seed(0)
    )
    drawn = torch.bincount(out.tokens[:, 0], minlength=model.vocab_size).float() / n
    expected = _first_word_distribution(model, 0, temperature, top_p)
    assert ((expected == 0) <= (drawn == 0)).all()  # nothing outside the nucleus, never <unk>
    assert (drawn - expected).abs().max() < 0.015, (drawn, expected)  # 20,000 draws: about 3.5 sigma
    plain = _first_word_distribution(model, 0)
    assert (expected - plain).abs().max() > 0.05  # the setting matters: ignoring it would fail the line above


def test_sampled_logprobs_are_those_of_the_tempered_distribution_drawn_from():
    """SCST's policy gradient needs log q of the distribution it samples from: at a temperature other
    than 1 the model's own log-probabilities give a biased gradient (they used to be what it got)."""
    model = MarkovCaptioner(seed=3)
    images = torch.arange(4).float().view(4, 1)
    for t in (0.5, 2.0):
        g = torch.Generator().manual_seed(0)
        out = decoding.sample(model, images, 5, temperature=t, generator=g, n=3, sampled_logprobs=True)
        last = torch.cat([torch.full((12, 1), model.start_id), out.tokens[:, :-1]], 1)  # (12, T)
        kinds = images.view(-1).long().repeat_interleave(3)[:, None].expand_as(last)
        lp = torch.log_softmax(model.table[kinds, last], -1)  # the model's own, (12, T, vocab)
        lp[..., model.unk_id] = float("-inf")
        q = torch.log_softmax(lp / t, -1).gather(-1, out.tokens[..., None])[..., 0]
        real = out.tokens != model.pad_id
        assert torch.allclose(out.logprobs[real], q[real], atol=1e-5)
        own = decoding.sample(model, images, 5, temperature=t, generator=torch.Generator().manual_seed(0), n=3)
        assert torch.equal(own.tokens, out.tokens) and not torch.allclose(own.logprobs[real], q[real], atol=1e-3)


def test_live_beams_never_choose_pad_or_start():
    """A model that likes <pad> (or <start>) early used to end a beam there without <end>."""
    for token in (MarkovCaptioner.pad_id, MarkovCaptioner.start_id):
        model = MarkovCaptioner(seed=0)
        model.table[:, :, token] = 8.0  # by far the likeliest next word everywhere
        out = decoding.beam_search(model, torch.arange(4).float().view(4, 1), beam_size=3, max_len=6)
        for row in out.tokens.tolist():
            words = row[: row.index(model.end_id) + 1] if model.end_id in row else row
            assert model.start_id not in words and model.pad_id not in words, (token, row)


def test_n_best_lists_the_beams_ranked_the_first_being_the_beam_search_result():
    model = MarkovCaptioner(seed=2)
    one = decoding.beam_search(model, KINDS, beam_size=4, max_len=6, keep_greedy=False)
    three = decoding.beam_search(model, KINDS, beam_size=4, max_len=6, n_best=3)
    assert three.tokens.size(0) == 3 * KINDS.size(0)
    ranked = three.scores.view(-1, 3)  # (images, 3)
    assert (ranked[:, :-1] >= ranked[:, 1:]).all()
    assert torch.equal(three.tokens[::3, : one.tokens.size(1)], one.tokens) and torch.allclose(ranked[:, 0], one.scores)
    for kind in range(4):  # three different captions, each scored as the model scores it
        rows = [_trim(three.tokens[3 * kind + j]) for j in range(3)]
        assert len({tuple(r) for r in rows}) == 3
        for j, row in enumerate(rows):
            assert ranked[kind, j].item() == pytest.approx(model.sequence_logprob(kind, row), abs=1e-4)
    with pytest.raises(InputError, match="n-best 3 needs a beam"):
        decoding.beam_search(model, KINDS, beam_size=2, n_best=3)


def _ends_after(rows: torch.Tensor, word: int) -> int:
    """How many captions end (<end>) right after ``word``."""
    n = 0
    for row in rows.tolist():
        if MarkovCaptioner.end_id in row:
            at = row.index(MarkovCaptioner.end_id)
            n += at > 0 and row[at - 1] == word
    return n


def test_bad_endings_bar_end_after_those_words_in_every_decoder():
    """After word 4 <end> is by far the likeliest token: without bad_endings most captions end "... 4",
    with it none does, in greedy, beam search, n-best and sampling, and the sampled log-probabilities are
    those of the distribution drawn from (the barred <end> renormalised away)."""
    model = MarkovCaptioner(seed=0)
    model.table[:, 4, :] = -2.0
    model.table[:, 4, model.end_id] = 6.0
    model.table[:, model.start_id, 4] = 6.0  # every caption opens with word 4
    bad = torch.tensor([4])
    images = torch.arange(4).float().repeat(50).view(-1, 1)  # (200, 1)

    def runs(b):
        g = torch.Generator().manual_seed(0)
        return {
            "greedy": decoding.greedy(model, images, 6, bad_endings=b),
            "beam": decoding.beam_search(model, images, 3, 6, bad_endings=b),
            "n_best": decoding.beam_search(model, images, 3, 6, n_best=3, bad_endings=b),
            "sample": decoding.sample(model, images, 6, generator=g, sampled_logprobs=True, bad_endings=b),
        }

    free, barred = runs(None), runs(bad)
    for name in free:
        assert _ends_after(free[name].tokens, 4) > 0.5 * images.size(0), name  # the setting matters
        assert _ends_after(barred[name].tokens, 4) == 0, name
    out = barred["sample"]
    step = out.tokens[:, 1]  # the word after the opening 4: drawn with <end> barred
    lp = torch.log_softmax(model.table[0, 4], -1)
    lp[[model.unk_id, model.end_id, model.pad_id, model.start_id]] = float("-inf")  # no live caption emits these
    q = torch.log_softmax(lp, -1)
    rows = (images.view(-1) == 0) & (out.tokens[:, 0] == 4)
    assert rows.sum() > 10
    assert torch.allclose(out.logprobs[rows, 1], q[step[rows]], atol=1e-5)


def test_sequence_logprobs_are_the_engines_for_the_same_captions_with_gradients():
    """Beam SCST scores the beams it chose by teacher forcing: the log-probabilities must be those the
    engine draws from (<unk>, <pad> and <start> barred, 0 after <end>), and carry gradients to the weights.
    An untrained model's samples used to hold <pad> and <start> mid-caption."""
    model = _tiny_model("cnn_gru")
    images = torch.randn(3, 3, 32, 32)
    out = decoding.sample(model, images, 7, n=2, generator=torch.Generator().manual_seed(0), sampled_logprobs=True)
    before_end = torch.cumsum(out.tokens == model.end_id, 1) == 0  # (6, T)
    assert not ((out.tokens == model.pad_id) | (out.tokens == model.start_id))[before_end].any()
    lp = decoding.sequence_logprobs(model, images, out.tokens)  # (6, T)
    assert lp.shape == out.tokens.shape
    assert torch.allclose(lp, out.logprobs, atol=1e-5)
    lp.sum().backward()
    assert model.out.weight.grad is not None and model.out.weight.grad.abs().sum() > 0
