"""SparseGPT: one-shot pruning of large language models (Frantar & Alistarh, arXiv 2301.00774).

Why this paper: SparseGPT is the reference one-shot pruning method of the catalogue's weight-pruning technique (and
the standard baseline of later post-training pruning methods, Wanda among them); it prunes to unstructured or N:M
sparsity from a few calibration samples, with no retraining.

The method (checked against the official code, github.com/IST-DASLab/sparsegpt), per linear layer ``W [rows, cols]``
with calibration inputs ``X``:
* ``H = 2 X^T X / n`` (+ ``percdamp * mean(diag H)`` on the diagonal; columns never active are zeroed and get
  ``H_cc = 1``), and ``U`` = the upper Cholesky factor of ``H^-1`` (its rows are the sequential OBS inverses);
* columns are processed left to right; the mask is chosen per block of ``blocksize`` columns (unstructured: the
  ``sparsity`` fraction of the block's weights with the smallest ``w^2 / U_cc^2``) or per group of ``M`` columns
  (N:M: the ``N`` smallest of each row's group);
* pruning column ``c`` zeroes its masked weights and compensates the remaining columns with the OBS update
  ``W[:, c:] -= ((w_c - q_c) / U_cc) U[c, c:]``. The official algorithm applies the update to the block at once and
  to the columns right of the block in one matrix product at the block end ("lazy batch updates").

Functions and classes
- ``hessian``: ``2 X^T X / n`` from inputs ``[n, cols]``.
- ``naive_sparsegpt``: the specification -- every column's update applied to all later columns immediately.
- ``sparsegpt``: the official blocked (lazy) update order; the same result up to rounding (tested).
- ``SparseGPT``: prunes every ``nn.Linear`` of a ``MinimalLVLM``'s decoder layers, layer after layer, with the
  inputs the already-pruned model produces on calibration ids (the official sequential procedure), as a context
  manager that restores the dense weights on exit.

Deviations
- Unstructured masks prune exactly ``floor(block size * sparsity)`` weights per block (the official
  ``tmp <= sorted[int(n * s)]`` prunes one more, and every tie); ``sparsity = 0`` prunes nothing.
- No joint quantisation (the official code can quantise while pruning); the LM head and the vision tower are left
  dense, as in the official LLM scripts.
- Pruned weights are stored densely (zeros): this reference measures accuracy, not sparse-kernel speed.

Identity: ``sparsity = 0`` (and no N:M pattern) leaves every weight unchanged.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

__all__ = ["hessian", "naive_sparsegpt", "sparsegpt", "SparseGPT"]


def hessian(x: Tensor) -> Tensor:
    """``2 X^T X / n`` (fp64) from layer inputs ``x [n, cols]`` (any leading dims are flattened)."""
    x = x.reshape(-1, x.shape[-1]).double()
    return 2.0 * x.T @ x / x.shape[0]


def _check(weight, H, sparsity, prunen, prunem, blocksize):
    if weight.dim() != 2 or H.shape != (weight.shape[1], weight.shape[1]):
        raise ValueError(f"weight must be [rows, cols] and H [cols, cols]; got {tuple(weight.shape)}, {tuple(H.shape)}")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must lie in [0, 1), got {sparsity}")
    if (prunen == 0) != (prunem == 0) or prunen < 0 or (prunem and prunen >= prunem):
        raise ValueError(f"N:M needs 0 < N < M (or both 0), got {prunen}:{prunem}")
    if prunem and blocksize % prunem:
        raise ValueError(f"blocksize {blocksize} must be a multiple of M={prunem}")
    if blocksize < 1:
        raise ValueError(f"blocksize must be positive, got {blocksize}")


def _prepare(weight: Tensor, H: Tensor, percdamp: float):
    """(W fp64 with dead columns zeroed, U = upper Cholesky factor of (H + damp I)^-1)."""
    W = weight.double().clone()
    H = H.double().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    damp = percdamp * torch.mean(torch.diag(H))
    H += damp * torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    return W, U


def _block_mask(W_block: Tensor, d: Tensor, sparsity: float) -> Tensor:
    """Unstructured mask of one block: the ``floor(numel * sparsity)`` smallest ``w^2 / d^2`` (ties: lower index)."""
    metric = (W_block**2 / d[None, :] ** 2).flatten()
    k = int(metric.numel() * sparsity)
    mask = torch.zeros_like(metric, dtype=torch.bool)
    if k:
        mask[torch.sort(metric, stable=True).indices[:k]] = True
    return mask.view_as(W_block)


def _nm_mask(W_group: Tensor, d: Tensor, prunen: int) -> Tensor:
    metric = W_group**2 / d[None, :] ** 2
    idx = torch.sort(metric, dim=1, stable=True).indices[:, :prunen]
    return torch.zeros_like(W_group, dtype=torch.bool).scatter_(1, idx, True)


def naive_sparsegpt(
    weight: Tensor,
    H: Tensor,
    sparsity: float = 0.5,
    *,
    prunen: int = 0,
    prunem: int = 0,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> Tensor:
    """Pruned copy of ``weight`` (its dtype): column by column, each OBS update applied at once to every later
    column."""
    _check(weight, H, sparsity, prunen, prunem, blocksize)
    if sparsity == 0 and prunen == 0:
        return weight.clone()
    W, U = _prepare(weight, H, percdamp)
    cols = W.shape[1]
    mask = torch.zeros_like(W, dtype=torch.bool)
    for c in range(cols):
        if prunen == 0 and c % blocksize == 0:
            end = min(c + blocksize, cols)
            mask[:, c:end] = _block_mask(W[:, c:end], torch.diag(U)[c:end], sparsity)
        if prunen and c % prunem == 0:
            mask[:, c : c + prunem] = _nm_mask(W[:, c : c + prunem], torch.diag(U)[c : c + prunem], prunen)
        w = W[:, c].clone()
        q = torch.where(mask[:, c], torch.zeros_like(w), w)
        err = (w - q) / U[c, c]
        W[:, c:] -= err[:, None] * U[c, c:][None, :]
        W[:, c] = q
    return W.to(weight.dtype)


def sparsegpt(
    weight: Tensor,
    H: Tensor,
    sparsity: float = 0.5,
    *,
    prunen: int = 0,
    prunem: int = 0,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> Tensor:
    """``naive_sparsegpt`` with the official lazy batch updates: within a block column by column, the columns right
    of the block updated once per block (``W[:, end:] -= Err @ U[block, end:]``)."""
    _check(weight, H, sparsity, prunen, prunem, blocksize)
    if sparsity == 0 and prunen == 0:
        return weight.clone()
    W, U = _prepare(weight, H, percdamp)
    cols = W.shape[1]
    for start in range(0, cols, blocksize):
        end = min(start + blocksize, cols)
        W1 = W[:, start:end].clone()
        U1 = U[start:end, start:end]
        Q1, Err1 = torch.zeros_like(W1), torch.zeros_like(W1)
        mask1 = _block_mask(W1, torch.diag(U1), sparsity) if prunen == 0 else torch.zeros_like(W1, dtype=torch.bool)
        for i in range(end - start):
            if prunen and i % prunem == 0:
                mask1[:, i : i + prunem] = _nm_mask(W1[:, i : i + prunem], torch.diag(U1)[i : i + prunem], prunen)
            w = W1[:, i]
            q = torch.where(mask1[:, i], torch.zeros_like(w), w)
            Q1[:, i] = q
            err = (w - q) / U1[i, i]
            W1[:, i:] -= err[:, None] * U1[i, i:][None, :]
            Err1[:, i] = err
        W[:, start:end] = Q1
        W[:, end:] -= Err1 @ U[start:end, end:]
    return W.to(weight.dtype)


@dataclass
class SparseGPT:
    """``with SparseGPT(sparsity=0.5)(model, calibration_ids): ...`` prunes the decoder's linear layers while
    active. N:M: ``SparseGPT(prunen=2, prunem=4)``. ``impl="naive"`` uses the unblocked specification."""

    sparsity: float = 0.5
    prunen: int = 0
    prunem: int = 0
    blocksize: int = 128
    percdamp: float = 0.01
    impl: str = "auto"

    @torch.no_grad()
    def prune(self, model, calibration_ids: list) -> dict:
        """Prune in place, decoder layer after decoder layer; returns ``{linear name: fraction of zero weights}``."""
        fn = naive_sparsegpt if self.impl == "naive" else sparsegpt
        report = {}
        for l, layer in enumerate(model.layers):
            linears = {name: mod for name, mod in layer.named_modules() if isinstance(mod, nn.Linear)}
            inputs = {name: [] for name in linears}
            handles = [
                mod.register_forward_hook(lambda m, i, o, name=name: inputs[name].append(i[0].detach()))
                for name, mod in linears.items()
            ]
            try:
                for ids in calibration_ids:
                    model.forward_tokens(input_ids=ids)
            finally:
                for h in handles:
                    h.remove()
            for name, mod in linears.items():
                H = hessian(torch.cat([x.reshape(-1, x.shape[-1]) for x in inputs[name]]))
                blocksize = min(self.blocksize, mod.in_features) if not self.prunem else self.blocksize
                mod.weight.copy_(
                    fn(
                        mod.weight,
                        H,
                        self.sparsity,
                        prunen=self.prunen,
                        prunem=self.prunem,
                        blocksize=blocksize,
                        percdamp=self.percdamp,
                    )
                )
                report[f"layers.{l}.{name}"] = float((mod.weight == 0).float().mean())
        return report

    @contextlib.contextmanager
    def __call__(self, model, calibration_ids: list):
        dense = {name: p.detach().clone() for name, p in model.layers.named_parameters()}
        self.report: Optional[dict] = self.prune(model, calibration_ids)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, p in model.layers.named_parameters():
                    p.copy_(dense[name])
