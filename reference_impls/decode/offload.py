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

    def __init__(self, *args, storage_device="cpu", prefetch: bool = True, **kw):
        """``StaticKVCache``'s arguments; its ``device`` is where attention runs (and the lengths live), the K/V
        buffers sit on ``storage_device``."""
        super().__init__(*args, **kw)
        self.compute_device = self._lengths.device
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

    def _take(self, layer: int, rows: int):
        """This layer's first ``rows`` slots on the compute device: the prefetched copy, or one made now."""
        if layer not in self._staged or self._staged[layer][2] < rows:
            self._copy(layer, rows)  # on demand (always, without prefetch)
        k, v, _, event = self._staged.pop(layer)
        if event is not None:
            event.synchronize()  # the host writes this layer's pinned buffer next: the copy must be done
        return k[:, :, :rows], v[:, :, :rows]

    def update(self, layer, k_new, v_new, positions, n_new) -> AttendKV:
        old_rows, start = self._bound[layer], self._lengths[layer].clone()
        k_old, v_old = self._take(layer, old_rows)
        stored = super().update(layer, k_new, v_new, positions, n_new)  # checks, stores the chunk, moves the lengths
        B, H, T, D = k_new.shape
        k = k_old.new_zeros(B, H, stored.k.shape[2], D)
        v = torch.zeros_like(k)
        k[:, :, :old_rows], v[:, :, :old_rows] = k_old, v_old
        slots = start[:, None] + torch.arange(T, device=start.device)
        idx = slots[:, None, :, None].expand(B, H, T, D)
        k.scatter_(2, idx, k_new.to(k.dtype))
        v.scatter_(2, idx, v_new.to(v.dtype))
        if self.prefetch and self.n_layers > 1:
            nxt = (layer + 1) % self.n_layers
            self._copy(nxt, self._bound[nxt])
        # resident now: this layer's copy (attention holds it) and the prefetched next layer
        self.peak_resident_bytes = max(self.peak_resident_bytes, 2 * k.numel() * k.element_size() + self._resident())
        return stored._replace(k=k, v=v)

    def reset(self) -> None:
        super().reset()
        self._staged.clear()

    def rollback(self, n) -> None:
        super().rollback(n)
        self._staged.clear()
