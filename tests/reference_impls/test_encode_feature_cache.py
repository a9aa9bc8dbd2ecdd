"""Visual feature caching (encode/feature_cache.py): identity, the batched cache against the frame-by-frame
specification on odd frame counts, reuse of near-duplicate frames, and one encoder call."""

import pytest
import torch

from reference_impls.encode.feature_cache import FrameFeatureCache, frame_similarity, naive_cached_frame_features
from reference_impls.models import LVLMConfig, MinimalLVLM

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def model():
    return MinimalLVLM(LVLMConfig.tiny(n_layers=2, init_std=0.1), seed=0)


def _video(model, seed=0):
    """Frames A, A, B, B + small noise, C, zeros, zeros (7 frames, an odd count)."""
    size = model.cfg.vision.image_size
    g = torch.Generator().manual_seed(seed)
    a, b, c = (torch.randn(3, size, size, generator=g) for _ in range(3))
    noisy = b + 0.01 * torch.randn(3, size, size, generator=g)
    zero = torch.zeros(3, size, size)
    return torch.stack([a, a, b, noisy, c, zero, zero])


class CountingEncoder:
    def __init__(self, model):
        self.model, self.calls, self.frames = model, 0, 0

    def __call__(self, frames):
        self.calls += 1
        self.frames += frames.shape[0]
        return self.model.encode_images(frames)


def test_similarity_edge_cases():
    x = torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(0))
    zero = torch.zeros(3, 4, 4)
    assert frame_similarity(x, x) == pytest.approx(1.0)
    assert frame_similarity(x, -x) == pytest.approx(-1.0)
    assert frame_similarity(zero, zero) == 1.0 and frame_similarity(zero, x) == 0.0


def test_threshold_above_one_encodes_every_frame_unchanged(model):
    frames = _video(model)
    out = FrameFeatureCache(threshold=2.0)(model.encode_images, frames)
    assert bool(out.encoded.all()) and torch.equal(out.reference, torch.arange(7))
    assert torch.equal(out.features, model.encode_images(frames))


@pytest.mark.parametrize("threshold", [-1.0, 0.0, 0.5, 0.99, 0.99999, 1.0, 2.0])
def test_batched_equals_frame_by_frame_specification(model, threshold):
    frames = _video(model)
    encoder = CountingEncoder(model)
    out = FrameFeatureCache(threshold)(encoder, frames)
    want = naive_cached_frame_features(model.encode_images, frames, threshold)
    assert torch.equal(out.encoded, want.encoded) and torch.equal(out.reference, want.reference)
    assert torch.allclose(out.features, want.features, rtol=1e-5, atol=1e-6)
    assert encoder.calls == 1 and encoder.frames == out.frames_encoded


def test_near_duplicates_are_reused_and_distinct_frames_encoded(model):
    out = FrameFeatureCache(threshold=0.99)(model.encode_images, _video(model))
    assert out.encoded.tolist() == [True, False, True, False, True, True, False]
    assert out.reference.tolist() == [0, 0, 2, 2, 4, 5, 5]
    assert torch.equal(out.features[3], out.features[2])


def test_bad_input_is_one_clear_error(model):
    with pytest.raises(ValueError, match="T, C, H, W"):
        FrameFeatureCache(0.9)(model.encode_images, torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="no frames"):
        FrameFeatureCache(0.9)(model.encode_images, torch.zeros(0, 3, 8, 8))
    with pytest.raises(ValueError, match="number"):
        FrameFeatureCache(float("nan"))
