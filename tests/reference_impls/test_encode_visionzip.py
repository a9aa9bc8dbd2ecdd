"""VisionZip (arXiv 2412.04467): batched path vs the naive specification, scores from scored_attention."""

import pytest
import torch

from reference_impls.encode import visionzip as vz
from reference_impls.ops._triton import launch_counts
from tests.reference_impls._utils import randn, rel_rms_err


def _inputs(batch, num_tokens, channels=12, dm=6, seed=0):
    hidden = randn(batch, num_tokens, channels, seed=seed)
    scores = randn(batch, num_tokens, seed=seed + 1).softmax(-1)
    metric = randn(batch, num_tokens, dm, seed=seed + 2)
    return hidden, scores, metric


@pytest.mark.parametrize(
    "num_tokens,d,c,has_cls",
    [
        (1, 1, 0, True),
        (5, 2, 3, True),
        (17, 4, 3, False),
        (63, 10, 5, True),
        (577, 54, 10, True),
        (577, 162, 30, True),
        (64, 0, 7, False),
        (40, 39, 1, True),
    ],
)
@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_matches_spec(num_tokens, d, c, has_cls, impl):
    if impl == "triton" and num_tokens > 64:
        pytest.skip("interpreter: keep CPU shapes small")
    hidden, scores, metric = _inputs(3, num_tokens, seed=num_tokens)
    ref = vz.naive_visionzip(hidden, scores, metric, d, c, has_cls)
    launches = launch_counts["_cosine_max_argmax_kernel"]
    out = vz.visionzip(hidden, scores, metric, d, c, has_cls, impl=impl)
    if impl == "triton" and num_tokens - d - c > 0:
        assert launch_counts["_cosine_max_argmax_kernel"] > launches
    assert out.tokens.shape == (3, d + c, hidden.shape[-1])
    for name in ("dominant_idx", "target_idx", "member_idx", "assignment", "counts"):
        assert torch.equal(getattr(out, name), getattr(ref, name)), name
    assert rel_rms_err(out.tokens, ref.tokens) < 1e-6
    # every non-dominant, non-target token is assigned exactly once
    if c:
        assert torch.equal(out.counts.sum(1), torch.full((3,), num_tokens - d - c))
    if has_cls:
        assert bool((out.dominant_idx[:, 0] == 0).all())
    # dominant tokens are copied unchanged
    assert torch.equal(out.tokens[:, :d], hidden.gather(1, out.dominant_idx[..., None].expand(-1, -1, 12)))


def test_identity_when_everything_is_dominant():
    hidden, scores, metric = _inputs(2, 33)
    for fn in (vz.naive_visionzip, vz.visionzip):
        out = fn(hidden, scores, metric, 33, 0)
        assert torch.equal(out.tokens, hidden)


def test_contextual_token_is_target_plus_member_mean():
    hidden, scores, metric = _inputs(1, 20, seed=5)
    out = vz.visionzip(hidden, scores, metric, 5, 3, impl="torch")
    for slot in range(3):
        members = out.member_idx[0][out.assignment[0] == slot]
        expected = hidden[0, out.target_idx[0, slot]]
        if len(members):
            expected = expected + hidden[0, members].mean(0)
        assert torch.allclose(out.tokens[0, 5 + slot], expected, atol=1e-6)


@pytest.mark.parametrize("num_tokens", [1, 50, 257])
@pytest.mark.parametrize("impl", ["naive", "triton"])
def test_cls_scores_match_eager(num_tokens, impl):
    q = randn(2, 4, 1, 16, seed=1)
    k = randn(2, 4, num_tokens, 16, seed=2)
    ref = vz.naive_cls_attention_scores(q, k)
    out = vz.cls_attention_scores(q, k, impl=impl)
    assert rel_rms_err(out, ref) < 1e-6
    assert torch.allclose(out.sum(-1), torch.full((2,), 4.0), atol=1e-5)  # one softmax row per head


def test_mean_received_attention_matches_eager():
    q = randn(2, 3, 37, 8, seed=3)
    k = randn(2, 3, 37, 8, seed=4)
    assert rel_rms_err(vz.mean_received_attention(q, k, impl="naive"), vz.naive_mean_received_attention(q, k)) < 1e-6


def test_group_mean():
    x = torch.arange(8.0).view(8, 1)
    assert torch.equal(vz.group_mean(x, 4), torch.tensor([[1.5], [5.5]]))
    with pytest.raises(ValueError):
        vz.group_mean(torch.zeros(6), 4)


@pytest.mark.parametrize(
    "d,c,has_cls,shape",
    [
        (0, 3, True, None),  # CLS needs dominant >= 1
        (30, 5, True, None),  # 35 > 33 tokens
        (-1, 2, False, None),
        (2, 2.5, False, None),
        (0, 0, False, None),
        (3, 2, True, "scores"),  # wrong score shape
    ],
)
def test_bad_args(d, c, has_cls, shape):
    hidden, scores, metric = _inputs(2, 33)
    if shape == "scores":
        scores = scores[:, :-1]
    for fn in (vz.naive_visionzip, vz.visionzip):
        with pytest.raises(ValueError):
            fn(hidden, scores, metric, d, c, has_cls)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_matches_spec(dtype):
    hidden, scores, metric = _inputs(4, 577, seed=9)
    ref = vz.naive_visionzip(hidden, scores, metric, 54, 10)
    out = vz.visionzip(hidden.cuda().to(dtype), scores.cuda(), metric.cuda(), 54, 10, impl="triton")
    assert torch.equal(out.dominant_idx.cpu(), ref.dominant_idx)
    q = randn(4, 16, 1, 64, seed=1, device="cuda", dtype=dtype)
    k = randn(4, 16, 577, 64, seed=2, device="cuda", dtype=dtype)
    assert rel_rms_err(vz.cls_attention_scores(q, k, impl="triton"), vz.naive_cls_attention_scores(q, k)) < 1e-2


def test_visionzip_on_the_minimal_lvlm_matches_the_spec():
    """The technique's image features: the feature layer's CLS attention row ranks the patches (naive scores), the
    naive VisionZip keeps dominant + contextual patches, the projector maps them; a budget covering the image is the
    unmodified encoder exactly; generation runs with the shortened prompt."""
    from tests.reference_impls._lvlm_prompts import tiny_model

    model = tiny_model()
    pix = randn(2, 3, 32, 32, seed=41)
    with torch.no_grad():
        assert torch.equal(
            vz.VisionZip(dominant=16, contextual=0).minimal_image_features(model, pix), model.encode_images(pix)
        )
        got = vz.VisionZip(dominant=5, contextual=2).minimal_image_features(model, pix)
        vc = model.cfg.vision
        x = model.vision(pix, n_blocks=vc.n_layers_run - 1)
        block = model.vision.blocks[vc.n_layers_run - 1]
        q, k, _ = block.attn.project_qkv(block.norm1(x))
        scores = vz.naive_cls_attention_scores(q[:, :, :1], k)
        ref = vz.naive_visionzip(block(x)[:, 1:], scores[:, 1:], k.mean(1)[:, 1:], 5, 2, has_cls=False)
        want = model.project(ref.tokens)
    assert rel_rms_err(got, want) < 1e-6 and got.shape[1] == 7
