"""FOCUS: training-free keyframe selection as combinatorial pure exploration (Zhu et al., "FOCUS: Efficient Keyframe
Selection for Long Video Understanding", arXiv 2510.27280).

Why this paper: FOCUS is the catalogue's training-free, model-agnostic keyframe selector with public code; like AKS
and BOLT (query-frame similarity samplers that are not in the catalogue; FOCUS reuses AKS's evaluation setup) it
scores frames against the query with an image-text matcher, but it scores only a small fraction of them.

The method (checked against the official code, github.com/NUS-HPC-AI-Lab/FOCUS, ``focus.py``): the video is cut
into arms (temporal regions of about ``coarse_every_sec`` seconds, at least ``min_coarse_segments``).
1. Coarse: score each arm's centre frame and ``extra_samples_per_region`` random frames of it.
2. Each arm gets an optimistic score (empirical Bernstein bound): ``mean + sqrt(2 ln(N) var / n) + 3 ln(N) / n``
   (``n`` samples in the arm, ``N`` in total, ``var`` the arm's sample variance, at least ``min_variance``).
3. Fine: in the ``max(min_zoom_segments, ceil(zoom_ratio * arms))`` best arms, score frames of a window around the
   centre: half spread uniformly, half at random (``fine_uniform_ratio``), one every ``fine_every_sec``; the arms'
   scores are updated.
4. Select ``k`` frames: first the ``round(top_ratio * min(k, scored))`` best-scored frames, then the rest spread
   evenly over the best ``clamp(ceil(zoom_ratio * arms), final_min_arms, final_max_arms)`` arms, drawn within each arm
   from a softmax (``temperature``) over min-max-normalised scores extended to unscored frames by their nearest
   scored neighbour ("nearest" interpolation, the official default).
Defaults are the official ones.

``score_frames(indices) -> Tensor [len(indices)]`` is the query-frame relevance in [0, 1] (the official code uses
BLIP image-text matching); FOCUS only decides which frames to score and which to keep.

Deviations
- Fine samples update the statistics of the arm that contains them (as the official code's comments describe); in
  the official code the update looks fine frames up in each arm's list of coarse frames and so leaves the arms'
  statistics unchanged.
- Randomness comes from a ``torch.Generator`` (official: numpy), so draws differ from the official ones.
- Only the "nearest" interpolation (the official default) is implemented; no minimum temporal gap between frames.
- ``k >= n_frames`` returns every frame without scoring (the official code would still sample).
As in the official code, the last ``n_frames mod arms`` frames belong to no arm (they can only enter through the
top-scored frames).

Identity: ``k >= n_frames`` keeps the whole video.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor

__all__ = ["Arm", "focus_score", "FOCUS", "FocusResult"]


@dataclass
class Arm:
    start: int  # first frame
    end: int  # last frame (inclusive)
    scores: dict = field(default_factory=dict)  # frame -> relevance, the frames scored in this arm
    focus: float = 0.0

    @property
    def n(self) -> int:
        return len(self.scores)

    def mean_var(self) -> tuple[float, float]:
        vals = list(self.scores.values())
        mean = sum(vals) / len(vals)
        var = sum((v - mean) ** 2 for v in vals) / len(vals) if len(vals) > 1 else 0.0
        return mean, var


def focus_score(mean: float, var: float, n: int, total: int, min_variance: float = 1e-6) -> float:
    """``mean + sqrt(2 ln(total) max(var, min_variance) / n) + 3 ln(total) / n`` (just ``mean`` when ``total <= 1``)."""
    if total <= 1 or n == 0:
        return mean
    var = max(var, min_variance)
    return mean + math.sqrt(2 * math.log(total) * var / n) + 3 * math.log(total) / n


@dataclass
class FocusResult:
    frames: list  # selected frame indices, ascending
    scored: int  # frames whose relevance was computed
    arms: list


@dataclass
class FOCUS:
    """``FOCUS().select(n_frames, fps, score_frames, k, generator)`` -> ``FocusResult``."""

    coarse_every_sec: float = 16.0
    fine_every_sec: float = 1.0
    zoom_ratio: float = 0.25
    final_min_arms: int = 4
    final_max_arms: int = 32
    min_coarse_segments: int = 8
    min_zoom_segments: int = 4
    extra_samples_per_region: int = 2
    min_variance: float = 1e-6
    fine_uniform_ratio: float = 0.5
    top_ratio: float = 0.2
    temperature: float = 0.06

    def _pick(self, pool: list, count: int, generator) -> list:
        count = min(count, len(pool))
        if count <= 0:
            return []
        order = torch.randperm(len(pool), generator=generator)[:count]
        return [pool[i] for i in order.tolist()]

    def _update(self, arms: list) -> None:
        total = sum(a.n for a in arms)
        for a in arms:
            mean, var = a.mean_var() if a.n else (0.0, 0.0)
            a.focus = focus_score(mean, var, a.n, total, self.min_variance)

    def select(
        self,
        n_frames: int,
        fps: float,
        score_frames: Callable[[list], Tensor],
        k: int,
        generator: Optional[torch.Generator] = None,
    ) -> FocusResult:
        if n_frames < 1 or fps <= 0 or k < 1:
            raise ValueError(f"need n_frames >= 1, fps > 0 and k >= 1; got {n_frames}, {fps}, {k}")
        if k >= n_frames:
            return FocusResult(list(range(n_frames)), 0, [])
        duration = n_frames / max(1.0, fps)
        wanted = max(self.min_coarse_segments, math.ceil(duration / max(1e-6, self.coarse_every_sec)))
        coarse_stride = max(1, n_frames // wanted)
        fine_stride = min(max(1, round(self.fine_every_sec * fps)), coarse_stride)
        half_window = max(1, round(max(1.0 / fps, duration / max(1, wanted) / 2.0) * fps))
        # 0. arms
        n_arms = max(1, n_frames // coarse_stride)
        size = max(1, n_frames // n_arms)
        arms = [Arm(i * size, min((i + 1) * size, n_frames) - 1) for i in range(n_arms)]
        scored: dict = {}

        def evaluate(frames):
            frames = [f for f in frames if f not in scored]
            if frames:
                values = score_frames(frames)
                for f, s in zip(frames, values.tolist()):
                    scored[f] = float(s)
            for f in frames:
                for a in arms:
                    if a.start <= f <= a.end:
                        a.scores[f] = scored[f]

        # 1. coarse: centre + random extra frames per arm
        coarse = []
        for a in arms:
            centre = (a.start + a.end) // 2
            others = [f for f in range(a.start, a.end + 1) if f != centre]
            coarse += [centre] + self._pick(others, self.extra_samples_per_region, generator)
        evaluate(coarse)
        self._update(arms)
        # 2.-3. fine sampling around the centres of the most promising arms
        ranked = sorted(arms, key=lambda a: -a.focus)
        zoom = min(len(arms), max(self.min_zoom_segments, math.ceil(len(arms) * self.zoom_ratio)))
        fine: list = []
        for a in ranked[:zoom]:
            centre = (a.start + a.end) // 2
            lo, hi = max(0, centre - half_window), min(n_frames - 1, centre + half_window)
            width = hi - lo + 1
            need = max(1, width // fine_stride)
            n_uniform = round(need * self.fine_uniform_ratio)
            if n_uniform:
                if width <= n_uniform:
                    grid = [(lo + hi) // 2]
                else:
                    step = width / n_uniform
                    grid = [min(lo + int(i * step + step / 2), hi) for i in range(n_uniform)]
                fine += [f for f in dict.fromkeys(grid) if f not in scored and f not in fine]
            pool = [f for f in range(lo, hi + 1) if f not in scored and f not in fine]
            fine += self._pick(pool, need - n_uniform, generator)
        evaluate(sorted(fine))
        self._update(arms)
        # 4. final selection
        best = sorted(scored.items(), key=lambda kv: (-kv[1], kv[0]))
        chosen = [f for f, _ in best[: round(self.top_ratio * min(k, len(scored)))]]
        remaining = k - len(chosen)
        if remaining > 0:
            S = min(
                len(arms), min(self.final_max_arms, max(self.final_min_arms, math.ceil(len(arms) * self.zoom_ratio)))
            )
            top = sorted(arms, key=lambda a: -a.focus)[:S]
            per_arm = [remaining // S + (1 if i < remaining % S else 0) for i in range(S)]
            taken = set(chosen)
            for a, count in zip(top, per_arm):
                candidates = [f for f in range(a.start, a.end + 1) if f not in taken]
                if not candidates or count == 0:
                    continue
                known = sorted(a.scores)
                est = torch.tensor(
                    [a.scores[min(known, key=lambda s: (abs(s - f), s))] for f in candidates], dtype=torch.float64
                )
                est = (est - est.min()) / (est.max() - est.min()) if est.max() > est.min() else torch.ones_like(est)
                probs = torch.softmax(est / max(1e-12, self.temperature), 0)
                picks = torch.multinomial(probs, min(count, len(candidates)), replacement=False, generator=generator)
                for i in picks.tolist():
                    chosen.append(candidates[i])
                    taken.add(candidates[i])
        return FocusResult(sorted(set(chosen))[:k], len(scored), arms)
