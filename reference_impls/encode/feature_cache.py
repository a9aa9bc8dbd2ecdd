"""Visual feature caching for video: a frame is encoded only when it differs enough from the last frame that was
encoded; otherwise that frame's features are reused.

A generic reference technique, closest to the cacher of STC (arXiv 2512.00891), which reuses the vision encoder's
features of temporally similar frames in streaming video LLMs.

Rule: frames are visited in order; frame 0 is encoded and becomes the reference. Frame ``t`` is compared with the
reference by the cosine similarity of the two frames' pixels (flattened); at ``similarity >= threshold`` it takes the
reference's features, else it is encoded and becomes the new reference. Comparing with the last *encoded* frame (not
the previous frame) bounds the drift: a slow pan cannot be reused frame after frame forever. ``threshold > 1`` never
reuses (the similarity is at most 1): every frame is encoded, the unmodified encoder's output.

- ``naive_cached_frame_features(encode, frames, threshold)``: the readable specification, one encoder call per
  encoded frame;
- ``FrameFeatureCache(threshold)(encode, frames)``: the same decisions (``decide``, pixels only), then a single
  batched encoder call on the frames to encode, and the features gathered by reference.

``encode`` maps frames ``[N, C, H, W]`` to features ``[N, tokens, dim]`` (e.g. ``MinimalLVLM.encode_images``).

Deviations from STC: the similarity is measured on pixels, not on the encoder's features or per token, and a frame
is reused whole; STC also prunes tokens before the LLM (its pruner), which is not part of this entry. The official
code was not compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

__all__ = ["CachedFrames", "FrameFeatureCache", "frame_similarity", "naive_cached_frame_features"]

Encoder = Callable[[Tensor], Tensor]


def frame_similarity(a: Tensor, b: Tensor) -> float:
    """Cosine similarity of two frames' flattened pixels (fp64); two all-zero frames are identical (1.0), an
    all-zero frame and another are not (0.0)."""
    a, b = a.double().flatten(), b.double().flatten()
    na, nb = float(a.norm()), float(b.norm())
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(a @ b) / (na * nb)


def _check_threshold(threshold: float) -> None:
    if threshold != threshold:
        raise ValueError("threshold must be a number (above 1 disables reuse)")


def _check(frames: Tensor, threshold: float) -> None:
    if frames.dim() != 4:
        raise ValueError(f"frames must be [T, C, H, W], got shape {tuple(frames.shape)}")
    _check_threshold(threshold)


@dataclass
class CachedFrames:
    features: Tensor  # [T, tokens, dim]
    encoded: Tensor  # [T] bool: the frame ran through the encoder
    reference: Tensor  # [T] long: the frame whose features it carries

    @property
    def frames_encoded(self) -> int:
        return int(self.encoded.sum())


def naive_cached_frame_features(encode: Encoder, frames: Tensor, threshold: float) -> CachedFrames:
    """Specification: visit the frames in order, encode a frame alone when it is not similar enough to the
    reference, else copy the reference's features."""
    _check(frames, threshold)
    features, encoded, reference = [], [], []
    ref = None
    for t in range(frames.shape[0]):
        if ref is not None and frame_similarity(frames[t], frames[ref]) >= threshold:
            features.append(features[ref])
            encoded.append(False)
        else:
            features.append(encode(frames[t : t + 1])[0])
            encoded.append(True)
            ref = t
        reference.append(ref)
    if not features:
        raise ValueError("no frames")
    return CachedFrames(torch.stack(features), torch.tensor(encoded), torch.tensor(reference))


@dataclass
class FrameFeatureCache:
    """Reuse the features of the last encoded frame for frames at least ``threshold`` similar to it."""

    threshold: float = 2.0

    def __post_init__(self):
        _check_threshold(self.threshold)

    def decide(self, frames: Tensor) -> Tensor:
        """The reference frame of every frame, ``[T]`` long (a frame that is its own reference is encoded); only
        pixels are compared, the encoder does not run."""
        _check(frames, self.threshold)
        reference = torch.empty(frames.shape[0], dtype=torch.long)
        ref = 0
        for t in range(frames.shape[0]):
            if t > 0 and frame_similarity(frames[t], frames[ref]) < self.threshold:
                ref = t
            reference[t] = ref
        return reference

    def __call__(self, encode: Encoder, frames: Tensor) -> CachedFrames:
        if frames.shape[0] == 0:
            raise ValueError("no frames")
        reference = self.decide(frames)
        encoded = reference == torch.arange(frames.shape[0])
        computed = encode(frames[encoded])  # one batched call
        slot = torch.cumsum(encoded.long(), 0) - 1  # position of each encoded frame among `computed`
        return CachedFrames(computed[slot[reference].to(computed.device)], encoded, reference)
