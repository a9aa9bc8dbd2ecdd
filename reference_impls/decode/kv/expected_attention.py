"""Expected Attention (kvpress, NVIDIA): score each prompt key by the attention that *future* queries are expected
to pay it, from the statistics of the prompt's queries, so that no future query is needed.

At the end of prefill, per layer, batch row and query head: the prompt queries after the first ``n_sink`` (their
RoPE rotation undone) give a mean ``mu`` and a covariance ``Sigma``; both are moved to the next
``n_future_positions`` positions by the average RoPE rotation ``R`` over those positions (``mu' = R mu``,
``Sigma' = R Sigma R^T``). For a key ``k`` (post-RoPE, as stored) a Gaussian query gives
``E[exp(q.k / sqrt(d))] = exp(mu'.k / sqrt(d) + k^T Sigma' k / (2 d))``; these are normalised over the prompt keys
after the sinks (a softmax), averaged over the head's query group and multiplied by ``||v||``. The ``n_sink`` first
rows are always kept, and the best ``floor(L * (1 - compression_ratio))`` rows stay (``scorer.ScorerPolicy``).

    with ExpectedAttention(compression_ratio=0.5)(model):
        model.generate(...)

Follows kvpress's ``ExpectedAttentionPress`` (defaults ``n_future_positions = 512``, ``n_sink = 4``, covariance and
value-norm rescaling on, ``epsilon = 0``). Deviations: kvpress re-projects the pre-RoPE queries from the hidden
states; here the post-RoPE queries the attention used are rotated back with the host's RoPE frequencies (the same
vectors in exact arithmetic), so only hosts with 1-D RoPE are supported (not Qwen2-VL's M-RoPE); the future
positions start after each row's own last position (ragged batches). Ties go to the lower index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Optional

import torch
from torch import Tensor

from reference_impls.decode.kv.base import LayerView
from reference_impls.decode.kv.scorer import ScorerPolicy, check_ratio

__all__ = ["ExpectedAttention", "expected_attention_scores", "average_rope_rotation", "naive_expected_attention"]


def _rotate(x: Tensor, positions: Tensor, inv_freq: Tensor) -> Tensor:
    """Hugging Face "rotate_half" RoPE of ``x [..., T, D]`` at ``positions [..., T]`` (negative: the inverse)."""
    freqs = positions.double()[..., None] * inv_freq.double()
    emb = torch.cat([freqs, freqs], -1)
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
    return x * emb.cos() + rotated * emb.sin()


def average_rope_rotation(start: Tensor, n_future: int, inv_freq: Tensor) -> Tensor:
    """``[B, D, D]``: the mean over positions ``start[b] .. start[b] + n_future - 1`` of the RoPE matrix
    ``R_p = diag(cos) + diag(sin) P`` ("rotate_half" layout: ``P x = cat(-x2, x1)``)."""
    D = 2 * inv_freq.numel()
    pos = start.double()[:, None] + torch.arange(n_future, dtype=torch.float64, device=start.device)  # [B, n]
    freqs = pos[..., None] * inv_freq.double().to(start.device)
    emb = torch.cat([freqs, freqs], -1)  # [B, n, D]
    cos, sin = emb.cos().mean(1), emb.sin().mean(1)  # [B, D]
    P = torch.zeros(D, D, dtype=torch.float64, device=start.device)
    P[D // 2 :, : D // 2] = torch.eye(D // 2)
    P[: D // 2, D // 2 :] = -torch.eye(D // 2)
    return torch.diag_embed(cos) + sin[..., None] * P


def expected_attention_scores(
    queries: Tensor,
    positions: Tensor,
    keys: Tensor,
    values: Tensor,
    n_new: Tensor,
    inv_freq: Tensor,
    n_future: int = 512,
    n_sink: int = 4,
    use_covariance: bool = True,
    use_vnorm: bool = True,
    epsilon: float = 0.0,
) -> Tensor:
    """Scores ``[B, Hkv, cap]`` (vectorised over heads; one batch row at a time for the ragged statistics).
    ``queries [B, Hq, T, D]`` post-RoPE at ``positions [B, T]``; ``keys``, ``values [B, Hkv, cap, D]`` whose first
    ``n_new[b]`` rows are the prompt. Sink rows score the row's maximum over all heads + 1; rows past the prompt 0."""
    B, Hq, T, D = queries.shape
    Hkv, cap = keys.shape[1], keys.shape[2]
    G = Hq // Hkv
    out = torch.zeros(B, Hkv, cap, dtype=torch.float64, device=keys.device)
    for b in range(B):
        L = int(n_new[b])
        q = _rotate(queries[b, :, n_sink:L].double(), -positions[b, n_sink:L][None, :], inv_freq)  # pre-RoPE
        mu = q.mean(1)  # [Hq, D]
        R = average_rope_rotation(positions[b, L - 1 : L] + 1, n_future, inv_freq)[0]
        k = keys[b, :, n_sink:L].double().repeat_interleave(G, 0)  # [Hq, n, D]
        logits = torch.einsum("hnd,hd->hn", k, mu @ R.T) / math.sqrt(D)
        if use_covariance:
            centred = q - mu[:, None]
            cov = torch.einsum("hni,hnj->hij", centred, centred) / q.shape[1]
            cov = R @ cov @ R.T
            logits = logits + torch.einsum("hni,hij,hnj->hn", k, cov, k) / D / 2
        score = logits.softmax(-1).view(Hkv, G, -1).mean(1)  # [Hkv, n]
        if use_vnorm:
            score = (score + epsilon) * values[b, :, n_sink:L].double().norm(dim=-1)
        out[b, :, n_sink:L] = score
        out[b, :, :n_sink] = score.max() + 1
    return out.float()


def naive_expected_attention(
    q: Tensor, k: Tensor, v: Tensor, inv_freq: Tensor, n_future: int = 512, n_sink: int = 4
) -> Tensor:
    """Spec for one prompt with positions ``0 .. L-1``: ``q [Hq, L, D]`` post-RoPE, ``k, v [Hkv, L, D]`` ->
    scores ``[Hkv, L]``, one query head, one key and one future position at a time (fp64)."""
    Hq, L, D = q.shape
    Hkv = k.shape[0]
    G = Hq // Hkv
    theta = inv_freq.double()

    def rope_matrix(p):
        c = torch.cat([torch.cos(p * theta)] * 2)
        s = torch.cat([torch.sin(p * theta)] * 2)
        R = torch.diag(c)
        for i in range(D // 2):
            R[i, i + D // 2] = -s[i]
            R[i + D // 2, i] = s[i + D // 2]
        return R

    R_future = sum(rope_matrix(float(p)) for p in range(L, L + n_future)) / n_future
    scores = torch.zeros(Hkv, L, dtype=torch.float64)
    for h in range(Hkv):
        per_head = []
        for g in range(h * G, (h + 1) * G):
            pre = torch.stack([rope_matrix(float(t)).T @ q[g, t].double() for t in range(n_sink, L)])
            mu = pre.mean(0)
            cov = sum(torch.outer(x - mu, x - mu) for x in pre) / pre.shape[0]
            mu_f, cov_f = R_future @ mu, R_future @ cov @ R_future.T
            logits = torch.tensor(
                [
                    float(k[h, j].double() @ mu_f) / math.sqrt(D)
                    + float(k[h, j].double() @ cov_f @ k[h, j].double()) / D / 2
                    for j in range(n_sink, L)
                ]
            )
            per_head.append(torch.softmax(logits, 0))
        scores[h, n_sink:] = torch.stack(per_head).mean(0) * v[h, n_sink:].double().norm(dim=-1)
    scores[:, :n_sink] = scores[:, n_sink:].max() + 1
    return scores


@dataclass
class ExpectedAttention(ScorerPolicy):
    """Expected Attention: keep the keys future queries are expected to attend to."""

    name: ClassVar[str] = "expected_attention"
    wants_queries: ClassVar[bool] = True
    compression_ratio: float = 0.0
    n_future_positions: int = 512
    n_sink: int = 4
    use_covariance: bool = True
    use_vnorm: bool = True
    epsilon: float = 0.0
    score_reduce: str = "mean"
    impl: str = "auto"
    inv_freq: Optional[Tensor] = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        check_ratio("compression_ratio", self.compression_ratio)
        for name in ("n_future_positions", "n_sink"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (1 if name == "n_future_positions" else 0):
                raise ValueError(
                    f"{name} must be a {'positive' if name == 'n_future_positions' else 'non-negative'} int, got {v!r}"
                )

    def prepare(self, spec) -> None:
        if spec.inv_freq is None:
            raise ValueError(
                "ExpectedAttention needs the host's 1-D RoPE frequencies (M-RoPE hosts such as "
                "Qwen2-VL are not supported)"
            )
        self.inv_freq = spec.inv_freq

    def score(self, view: LayerView) -> Tensor:
        n_new = view.n_new
        if bool((n_new <= self.n_sink).any()):
            raise ValueError(f"ExpectedAttention needs prompts longer than n_sink={self.n_sink}")
        T = view.queries.shape[2]
        return expected_attention_scores(
            view.queries,
            view.positions[:, 0, :T],
            view.keys,
            view.values,
            n_new,
            self.inv_freq.to(view.keys.device),
            self.n_future_positions,
            self.n_sink,
            self.use_covariance,
            self.use_vnorm,
            self.epsilon,
        )
