"""KV-cache offloading: every layer's keys and values live in host memory; a layer is copied to the accelerator only
while it attends, and the next layer's copy can start while the current one computes.

A generic reference technique for the catalogue's offloading papers, closest to the KV-cache part of FlexGen
(Sheng et al., arXiv 2303.06865), which places the cache (and weights, activations) in CPU memory or disk and
overlaps the transfers of the next layer with the computation of the current one. PowerInfer, LLM in a flash and
the MoE offloading papers move weights or experts instead; the schedule is the same idea.

``OffloadedKVCache`` implements the KV-cache protocol of ``reference_impls.models.kv_cache`` (it is a
``StaticKVCache`` whose buffers sit on ``storage_device``), so it is passed to the minimal LVLM as is:

    cache = OffloadedKVCache.for_model(model.cfg, batch_size, capacity, device="cuda")
    tokens = model.generate(input_ids, pixel_values, cache=cache)
    cache.peak_resident_bytes          # at most two layers' K/V on the accelerator

``prefetch=False`` is the readable specification: each layer is fetched when it attends and dropped after.
With ``prefetch=True`` serving layer ``l`` starts the copy of layer ``l + 1`` (on a side CUDA stream into pinned
memory when the devices are CUDA and CPU; a plain copy otherwise), so at most two layers are resident.

Deviations from FlexGen: no weight or activation offloading, no disk tier, no compression, no search for the
placement policy (the whole cache is offloaded), and one sequence batch (no zig-zag block schedule). On a CPU-only
machine both devices are the CPU: the copies and the residency accounting are the same, the overlap is not.
"""

from __future__ import annotations

import torch
from torch import Tensor

from reference_impls.models.kv_cache import AttendKV, StaticKVCache

__all__ = ["OffloadedKVCache"]


class OffloadedKVCache(StaticKVCache):
    """A static KV cache whose K/V buffers sit on ``storage_device``; attention sees compute-device copies."""

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        n_kv_heads: int,
        head_dim: int,
        capacity: int,
        dtype=torch.float32,
        device=None,
        storage_device="cpu",
        prefetch: bool = True,
    ):
        """``device``: where attention runs (and the lengths live); the K/V buffers sit on ``storage_device``."""
        super().__init__(n_layers, batch_size, n_kv_heads, head_dim, capacity, dtype=dtype, device=device)
        self.compute_device = torch.device(device or "cpu")
        self.storage_device = torch.device(storage_device)
        pin = self.storage_device.type == "cpu" and self.compute_device.type == "cuda"
        self.keys = [self._storage(k, pin) for k in self.keys]
        self.values = [self._storage(v, pin) for v in self.values]
        self.prefetch = prefetch
        self._stream = torch.cuda.Stream(self.compute_device) if prefetch and pin else None
        self._staged: dict = {}  # layer -> (k, v, rows, event): compute-device copies of the first `rows` slots
        self.peak_resident_bytes = 0
        self.bytes_fetched = 0

    def _storage(self, buffer: Tensor, pin: bool) -> Tensor:
        out = buffer.to(self.storage_device)
        return out.pin_memory() if pin else out

    def _copy(self, layer: int, rows: int):
        """Start copying the first ``rows`` slots of ``layer`` to the compute device."""
        k, v = self.keys[layer][:, :, :rows], self.values[layer][:, :, :rows]
        event = None
        if self._stream is not None:
            with torch.cuda.stream(self._stream):
                k, v = k.to(self.compute_device, non_blocking=True), v.to(self.compute_device, non_blocking=True)
                event = torch.cuda.Event()
                event.record(self._stream)
        else:
            k, v = k.to(self.compute_device, copy=True), v.to(self.compute_device, copy=True)
        self.bytes_fetched += 2 * k.numel() * k.element_size()
        self._staged[layer] = (k, v, rows, event)

    def _resident(self) -> int:
        return sum(2 * k.numel() * k.element_size() for k, _, _, _ in self._staged.values())

    def update(self, layer, k_new, v_new, positions, n_new) -> AttendKV:
        self.check_chunk(layer, k_new, v_new)
        B, H, T, D = k_new.shape
        old_rows = self._bound[layer]
        if layer not in self._staged or self._staged[layer][2] < old_rows:
            self._copy(layer, old_rows)  # on demand (always, without prefetch)
        k_old, v_old, _, event = self._staged.pop(layer)
        if event is not None:
            event.synchronize()  # the host writes this layer's pinned buffer below: the copy must be done
        start = self._lengths[layer]
        slots = start[:, None] + torch.arange(T, device=start.device)  # [B, T]
        rows = old_rows + T
        k = torch.zeros(B, H, rows, D, dtype=self.keys[layer].dtype, device=self.compute_device)
        v = torch.zeros_like(k)
        k[:, :, :old_rows], v[:, :, :old_rows] = k_old[:, :, :old_rows], v_old[:, :, :old_rows]
        idx = slots[:, None, :, None].expand(B, H, T, D)
        k.scatter_(2, idx, k_new.to(k.dtype))
        v.scatter_(2, idx, v_new.to(v.dtype))
        # write back the new rows only (the old ones are already in storage)
        store_idx = idx.to(self.storage_device)
        self.keys[layer].scatter_(2, store_idx, k_new.to(self.storage_device, self.keys[layer].dtype))
        self.values[layer].scatter_(2, store_idx, v_new.to(self.storage_device, self.values[layer].dtype))
        valid = torch.arange(T, device=start.device)[None, :] < n_new[:, None]
        self.positions[layer].scatter_(1, slots, torch.where(valid, positions, -1))
        written = start + T  # before the lengths (of which ``start`` is a view) move on
        self._lengths[layer] = start + n_new
        self._bound[layer] = rows
        if self.prefetch and self.n_layers > 1:
            nxt = (layer + 1) % self.n_layers
            self._copy(nxt, self._bound[nxt])
        # resident now: this layer's copy (attention holds it) and the prefetched next layer
        self.peak_resident_bytes = max(self.peak_resident_bytes, 2 * k.numel() * k.element_size() + self._resident())
        return AttendKV(k, v, written, self.positions[layer][:, :rows])

    def reset(self) -> None:
        super().reset()
        self._staged.clear()

    def rollback(self, n) -> None:
        super().rollback(n)
        self._staged.clear()
