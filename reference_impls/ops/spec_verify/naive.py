"""Speculative verification over ``P`` candidate paths of depth ``D`` (chain: P = 1), the readable spec.

Leviathan et al. arXiv 2211.17192 / Chen et al. arXiv 2302.01318 (rejection sampling), EAGLE arXiv 2401.15077
(greedy longest-prefix over tree paths).

Inputs
  draft_tokens [P, D] int64, -1 = no token at this depth (path shorter than D: rejected there).
  target       [P, D+1, V]: greedy -> any scores (logits) whose argmax is the target's choice;
               sampling -> target probabilities q (row d is the target distribution for draft position d,
               row D the bonus distribution after the whole path).
  draft_probs  [P, D, V] draft probabilities p (sampling only).
  uniforms     [P, D] U[0,1) draws (sampling only). Position d is accepted iff ``u * p(x) < q(x)``, i.e. with
               probability ``min(1, q(x)/p(x))``.
  force_accept [P, D] bool, optional: positions accepted regardless of the test (LVSpec's loose rule);
               a -1 token is never accepted.
Outputs
  accept_len [P] int64: length of the accepted prefix (cumulative product of per-position acceptance).
  greedy:    next_token [P] int64 = argmax target[p, accept_len] (correction or bonus token).
  sampling:  residual [P, V] fp32 = norm(relu(q - p)) at the first rejected position, or q[D] (bonus) when the
             whole path was accepted; falls back to q when relu(q - p) sums to 0.
"""

from __future__ import annotations

import torch


def check_verify_args(draft_tokens, target, draft_probs, uniforms, greedy, force_accept):
    if draft_tokens.dim() != 2 or draft_tokens.dtype != torch.int64:
        raise ValueError(f"draft_tokens must be int64 [P, D], got {draft_tokens.dtype} {tuple(draft_tokens.shape)}")
    P, D = draft_tokens.shape
    if target.dim() != 3 or target.shape[:2] != (P, D + 1):
        raise ValueError(f"target must be [P, D+1, V] = [{P}, {D + 1}, V], got {tuple(target.shape)}")
    V = target.shape[-1]
    if bool((draft_tokens >= V).any()):
        raise ValueError(f"draft_tokens contain ids >= vocabulary size {V}")
    if not greedy:
        if draft_probs is None or uniforms is None:
            raise ValueError("sampling verification needs draft_probs and uniforms")
        if draft_probs.shape != (P, D, V):
            raise ValueError(f"draft_probs must be [P, D, V] = {(P, D, V)}, got {tuple(draft_probs.shape)}")
        if uniforms.shape != (P, D):
            raise ValueError(f"uniforms must be [P, D] = {(P, D)}, got {tuple(uniforms.shape)}")
    if force_accept is not None and (force_accept.shape != (P, D) or force_accept.dtype != torch.bool):
        raise ValueError(
            f"force_accept must be bool [P, D] = {(P, D)}, got {force_accept.dtype} {tuple(force_accept.shape)}"
        )


def naive_verify_paths(draft_tokens, target, draft_probs=None, uniforms=None, *, greedy: bool, force_accept=None):
    check_verify_args(draft_tokens, target, draft_probs, uniforms, greedy, force_accept)
    P, D = draft_tokens.shape
    valid = draft_tokens >= 0
    tok = draft_tokens.clamp_min(0)
    if greedy:
        ok = target[:, :D].argmax(-1) == tok
    else:
        q_x = target[:, :D].float().gather(-1, tok[..., None])[..., 0]
        p_x = draft_probs.float().gather(-1, tok[..., None])[..., 0]
        ok = uniforms.float() * p_x < q_x
    if force_accept is not None:
        ok = ok | force_accept
    ok = ok & valid
    accept_len = ok.long().cumprod(-1).sum(-1)
    rows = torch.arange(P, device=target.device)
    at = target[rows, accept_len]  # [P, V]
    if greedy:
        return accept_len, at.argmax(-1)
    q = at.float()
    p_at = torch.cat([draft_probs.float(), torch.zeros_like(q)[:, None]], 1)[rows, accept_len]
    res = (q - p_at).clamp_min(0)
    total = res.sum(-1, keepdim=True)
    residual = torch.where(total > 0, res / total.clamp_min(1e-30), q)
    return accept_len, residual
