"""LiteVLM view selection (arXiv 2506.07416): selector, summed BCE, lexical rule, dropped views cost nothing."""

import pytest
import torch

from reference_impls.encode import litevlm_view_selection as lv
from tests.reference_impls._utils import randn


def _selector(**kw):
    torch.manual_seed(0)
    return lv.ViewSelector(num_views=6, vocab_size=97, d_model=32, n_layers=4, n_heads=4, max_len=16, **kw)


def test_logits_shape_and_padding_invariance():
    model = _selector().eval()
    ids, pad = lv.hash_tokenize(["what is in front of the ego car", "any pedestrian behind"], 97)
    logits = model(ids, pad)
    assert logits.shape == (2, 6)
    # extra padding columns must not change the result
    ids2 = torch.cat([ids, torch.zeros(2, 3, dtype=torch.long)], 1)
    pad2 = torch.cat([pad, torch.ones(2, 3, dtype=torch.bool)], 1)
    assert torch.allclose(model(ids2, pad2), logits, atol=1e-5)


def test_summed_bce_and_training_reduces_loss():
    model = _selector()
    texts = ["car in front", "truck behind us", "left side pedestrian", "right lane bus"] * 2
    labels = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1], [0, 1, 0, 0, 1, 0], [0, 0, 1, 0, 0, 1]] * 2).float()
    ids, pad = lv.hash_tokenize(texts, 97)
    logits = model(ids, pad)
    manual = sum(torch.nn.functional.binary_cross_entropy_with_logits(logits[:, v], labels[:, v]) for v in range(6))
    assert torch.allclose(lv.view_selection_loss(logits, labels), manual, atol=1e-6)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    while len(losses) < 200 and (not losses or losses[-1] > 0.05):
        losses.append(lv.train_step(model, optimizer, ids, labels, pad))
    assert losses[-1] <= 0.05 < losses[0]
    keep, _ = lv.select_views(model.eval()(ids, pad), model_weight=1.0, lexical_weight=0.0, threshold=0.5)
    assert torch.equal(keep, labels.bool())


def test_lexical_rule_and_selection():
    lexical = lv.lexical_scores(
        ["Is the FRONT-LEFT lane free?", "status of the car behind", "weather?"], lv.NUSCENES_KEYWORDS, 6
    )
    assert lexical[0].tolist() == [1, 1, 1, 0, 1, 0]  # "front", "front left", "left"
    assert lexical[1].tolist() == [0, 0, 0, 1, 1, 1]
    assert lexical[2].sum() == 0
    logits = torch.zeros(3, 6)  # model undecided: p = 0.5 -> 0.25 after weighting
    keep, score = lv.select_views(logits, lexical, threshold=0.5, min_views=1)
    assert torch.equal(keep[:2], lexical[:2].bool())
    assert keep[2].sum() == 1  # min_views fallback keeps one view
    keep0, _ = lv.select_views(logits, lexical, threshold=0.5, min_views=0)
    assert keep0[2].sum() == 0


def test_dropped_views_produce_no_tokens():
    views = randn(3, 6, 3, 8, 8, seed=1)
    keep = torch.tensor([[1, 0, 0, 1, 0, 1], [0, 0, 0, 0, 1, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    seen = []
    proj = torch.nn.Linear(3 * 4 * 4, 5)

    def encoder(x):  # [K, 3, 8, 8] -> [K, 4 tokens, 5]
        seen.append(x.shape[0])
        patches = x.unfold(2, 4, 4).unfold(3, 4, 4).permute(0, 2, 3, 1, 4, 5).reshape(x.shape[0], 4, -1)
        return proj(patches)

    ref, ref_len = lv.naive_encode_selected_views(encoder, views, keep)
    calls_naive = list(seen)
    seen.clear()
    out, lengths = lv.encode_selected_views(encoder, views, keep)
    assert seen == [int(keep.sum())]  # one batched call over the kept views only
    assert sum(calls_naive) == int(keep.sum())
    assert lengths.tolist() == [12, 4, 24] and torch.equal(lengths, ref_len)
    assert torch.allclose(out, ref, atol=1e-6)
    assert out.abs().sum(-1)[1, 4:].eq(0).all()  # padding beyond the single kept view


def test_bad_args():
    model = _selector()
    with pytest.raises(ValueError):
        model(torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(ValueError):
        model(torch.zeros(2, 17, dtype=torch.long))
    with pytest.raises(ValueError):
        model(torch.zeros(2, 3))
    with pytest.raises(ValueError):
        lv.view_selection_loss(torch.zeros(2, 6), torch.zeros(2, 5))
    with pytest.raises(ValueError):
        lv.lexical_scores(["x"], {"x": [7]}, 6)
    with pytest.raises(ValueError):
        lv.select_views(torch.zeros(2, 6), torch.zeros(2, 5))
    with pytest.raises(ValueError):
        lv.select_views(torch.zeros(2, 6), min_views=7)
    with pytest.raises(ValueError):
        lv.encode_selected_views(lambda x: x, torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError):
        lv.ViewSelector(num_views=0, vocab_size=10)
