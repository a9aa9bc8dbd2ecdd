"""Early exit with state propagation (decode/early_exit.py): identity, the batched hook against the row-by-row
specification on ragged prompts with images, and the exit rule itself."""

import pytest
import torch

from reference_impls.decode.early_exit import early_exit_generate, naive_early_exit_generate, softmax_response
from tests.reference_impls._lvlm_prompts import image_prompt, tiny_model

pytestmark = pytest.mark.usefixtures("single_torch_thread")

N_NEW = 8


@pytest.fixture(scope="module")
def case():
    model = tiny_model(n_layers=4)
    n = model.cfg.n_visual_tokens
    ids, lengths, pixels = image_prompt(model.cfg, starts=[2, 2, 2], lengths=[14 + n, 9 + n, 12 + n], seed=3)
    return model, ids, pixels, lengths


def test_softmax_response_is_top1_minus_top2():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]))
    assert torch.allclose(softmax_response(logits), torch.tensor([0.2, 0.7]))


def test_threshold_above_one_is_the_unmodified_model(case):
    model, ids, pixels, lengths = case
    want = model.generate(ids, pixels, max_new_tokens=N_NEW, lengths=lengths)
    out, stats = early_exit_generate(model, ids, pixels, max_new_tokens=N_NEW, lengths=lengths, threshold=2.0)
    assert torch.equal(out, want)
    assert bool((stats.exit_layers == model.cfg.n_layers).all())


@pytest.mark.parametrize("threshold,min_layer", [(0.0, 1), (0.0, 3), (0.004, 1), (0.01, 2), (0.02, 1), (2.0, 1)])
def test_batched_equals_row_by_row_specification(case, threshold, min_layer):
    model, ids, pixels, lengths = case
    kw = dict(max_new_tokens=N_NEW, lengths=lengths, threshold=threshold, min_layer=min_layer)
    out, stats = early_exit_generate(model, ids, pixels, **kw)
    want, want_stats = naive_early_exit_generate(model, ids, pixels, **kw)
    assert torch.equal(out, want)
    assert torch.equal(stats.exit_layers, want_stats.exit_layers)
    assert bool((stats.exit_layers >= min_layer).all())
    if threshold == 0.0:  # every token is confident enough at the first allowed layer
        assert bool((stats.exit_layers == min_layer).all())
        assert stats.layers_run == min_layer * stats.exit_layers.numel()


def test_some_tokens_exit_and_the_exits_change_later_tokens(case):
    """At a threshold inside the range of confidences some tokens exit and some do not; the propagated states make
    the output differ from the unmodified model's."""
    model, ids, pixels, lengths = case
    out, stats = early_exit_generate(model, ids, pixels, max_new_tokens=N_NEW, lengths=lengths, threshold=0.01)
    exits = stats.exit_layers
    assert bool((exits < model.cfg.n_layers).any()) and bool((exits == model.cfg.n_layers).any())
    assert stats.mean_exit_layer < model.cfg.n_layers
    assert not torch.equal(out, model.generate(ids, pixels, max_new_tokens=N_NEW, lengths=lengths))


@pytest.mark.parametrize("kw", [{"min_layer": 0}, {"min_layer": 5}, {"threshold": -0.1}, {"max_new_tokens": 0}])
def test_bad_settings_are_one_clear_error(case, kw):
    model, ids, _, _ = case
    with pytest.raises(ValueError):
        early_exit_generate(model, ids, **{"max_new_tokens": 2, **kw})
