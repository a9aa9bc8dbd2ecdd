"""PagedAttention's paged KV cache: a block pool, per-sequence block tables, reference-counted sharing with
copy-on-write, and shared prefixes (Kwon et al., "Efficient Memory Management for Large Language Model Serving with
PagedAttention", arXiv 2309.06180 -- vLLM).

Why this paper: PagedAttention is the KV-cache manager of vLLM, and paged KV blocks are what the catalogue's other
KV-management papers (prefix caching, offloading, recomputation) manage.

The method: the KV cache of every layer is one pool of fixed-size physical blocks (``block_size`` tokens each).
A sequence owns a *block table* mapping its logical blocks (token ``j`` lives in logical block
``j // block_size`` at offset ``j % block_size``) to physical ones, allocated on demand, so memory is wasted only in
each sequence's last block. Blocks are reference-counted: a forked sequence (parallel sampling, beam search, or a
request reusing a shared prefix) shares its parent's blocks, and the first write into a shared block copies it
(copy-on-write). Attention reads the blocks through the table (``ops.paged_attention``).

Classes
- ``BlockAllocator``: free list and reference counts.
- ``PagedKVCache``: the pools of every layer and the sequences' tables: ``add / fork / free / reserve / write /
  gather``, ``register_prefix`` for the paper's shared prefixes, and ``batch(seq_ids)`` -> ``PagedBatch``.
- ``PagedBatch``: the minimal LVLM's cache protocol over a set of sequences (one forward of a serving iteration:
  each row may be a prefill chunk or a decode token); ``commit()`` advances the sequences afterwards.

Deviations
- ``PagedBatch.update`` returns each row's keys/values gathered into a contiguous padded copy, because the minimal
  LVLM attends with SDPA; the paged kernel (``ops.paged_attention.paged_decode_attention``, ``PagedKVCache.attend``)
  reads the blocks in place and is tested against that copy. vLLM runs its paged kernel inside the model.
- Pool layout ``[num_blocks, Hkv, block_size, D]`` per layer (vLLM splits the key block for vectorised loads).
- Shared prefixes are registered explicitly (the paper's service-provider prefixes); vLLM's later automatic prefix
  caching (hashing every full block) is not implemented.
- No swapping to CPU memory: preemption is the serving scheduler's business (``serving/`` recomputes).

Identity: paging changes where keys and values are stored, not their values: a batch of sequences decodes exactly
as with the contiguous static cache (tested token for token and logit for logit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor

from reference_impls.models.kv_cache import AttendKV, KVCache
from reference_impls.ops.paged_attention import gather_blocks, paged_decode_attention

__all__ = ["BlockAllocator", "PagedKVCache", "PagedBatch", "OutOfBlocks"]


class OutOfBlocks(RuntimeError):
    """The pool has no free block left (the scheduler preempts a sequence and retries)."""


class BlockAllocator:
    """Physical block ids ``0 .. num_blocks - 1`` with reference counts; freed blocks are reused first-in first-out."""

    def __init__(self, num_blocks: int):
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be positive, got {num_blocks}")
        self.num_blocks = num_blocks
        self.ref_count = [0] * num_blocks
        self.free_blocks = list(range(num_blocks))

    @property
    def num_free(self) -> int:
        return len(self.free_blocks)

    def allocate(self) -> int:
        if not self.free_blocks:
            raise OutOfBlocks("no free KV block")
        block = self.free_blocks.pop(0)
        self.ref_count[block] = 1
        return block

    def share(self, block: int) -> None:
        self.ref_count[block] += 1

    def release(self, block: int) -> None:
        if self.ref_count[block] <= 0:
            raise RuntimeError(f"block {block} released more often than allocated")
        self.ref_count[block] -= 1
        if self.ref_count[block] == 0:
            self.free_blocks.append(block)


@dataclass
class Sequence:
    blocks: list = field(default_factory=list)  # physical block of each logical block
    length: int = 0  # tokens stored


class PagedKVCache:
    """Paged KV storage shared by all sequences of a serving engine (one pool per layer)."""

    def __init__(
        self,
        n_layers: int,
        n_kv_heads: int,
        head_dim: int,
        num_blocks: int,
        block_size: int = 16,
        *,
        dtype=torch.float32,
        device=None,
    ):
        if block_size < 1:
            raise ValueError(f"block_size must be positive, got {block_size}")
        self.n_layers, self.n_kv_heads, self.head_dim = n_layers, n_kv_heads, head_dim
        self.block_size, self.dtype = block_size, dtype
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.allocator = BlockAllocator(num_blocks)
        shape = (num_blocks, n_kv_heads, block_size, head_dim)
        self.k_pools = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(n_layers)]
        self.v_pools = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(n_layers)]
        self.seqs: dict = {}
        self.prefixes: dict = {}  # tuple(token ids) -> the sequence holding that prefix's KV
        self.copies = 0  # copy-on-write block copies made (for tests and statistics)

    @classmethod
    def for_model(cls, cfg, num_blocks: int, block_size: int = 16, **kw) -> "PagedKVCache":
        return cls(cfg.n_layers, cfg.n_kv_heads, cfg.head_dim, num_blocks, block_size, **kw)

    # -- sequences -----------------------------------------------------------------------------------------------
    def add(self, seq_id) -> None:
        if seq_id in self.seqs:
            raise ValueError(f"sequence {seq_id!r} already exists")
        self.seqs[seq_id] = Sequence()

    def fork(self, parent, child) -> None:
        """``child`` shares all of ``parent``'s blocks (reference counts + 1); later writes copy on demand."""
        if child in self.seqs:
            raise ValueError(f"sequence {child!r} already exists")
        src = self.seqs[parent]
        for block in src.blocks:
            self.allocator.share(block)
        self.seqs[child] = Sequence(list(src.blocks), src.length)

    def free(self, seq_id) -> None:
        for block in self.seqs.pop(seq_id).blocks:
            self.allocator.release(block)

    def length(self, seq_id) -> int:
        return self.seqs[seq_id].length

    def blocks_needed(self, seq_id, n_tokens: int) -> int:
        """New physical blocks ``reserve(seq_id, n_tokens)`` would take (copy-on-write included)."""
        seq = self.seqs[seq_id]
        new = -(-(seq.length + n_tokens) // self.block_size) - len(seq.blocks)
        last_shared = seq.length % self.block_size and self.allocator.ref_count[seq.blocks[-1]] > 1
        return max(new, 0) + int(bool(last_shared and n_tokens > 0))

    def reserve(self, seq_id, n_tokens: int) -> None:
        """Make room for ``n_tokens`` more tokens: copy a shared, partially filled last block, then append blocks.
        Raises ``OutOfBlocks`` (changing nothing) when the pool is short."""
        if self.blocks_needed(seq_id, n_tokens) > self.allocator.num_free:
            raise OutOfBlocks(
                f"sequence {seq_id!r} needs {self.blocks_needed(seq_id, n_tokens)} blocks, "
                f"{self.allocator.num_free} free"
            )
        seq = self.seqs[seq_id]
        if n_tokens > 0 and seq.length % self.block_size and self.allocator.ref_count[seq.blocks[-1]] > 1:
            old = seq.blocks[-1]
            new = self.allocator.allocate()
            for pool in self.k_pools + self.v_pools:
                pool[new] = pool[old]
            self.allocator.release(old)
            seq.blocks[-1] = new
            self.copies += 1
        while len(seq.blocks) * self.block_size < seq.length + n_tokens:
            seq.blocks.append(self.allocator.allocate())

    def write(self, layer: int, seq_id, start: int, k: Tensor, v: Tensor) -> None:
        """Store ``k, v [Hkv, T, D]`` at the sequence's token positions ``start .. start + T - 1`` (reserved)."""
        seq = self.seqs[seq_id]
        T = k.shape[1]
        if start + T > len(seq.blocks) * self.block_size:
            raise ValueError(f"writing {T} tokens at {start} beyond the {len(seq.blocks)} reserved blocks")
        tokens = torch.arange(start, start + T, device=self.device)
        blocks = torch.tensor(seq.blocks, device=self.device)[tokens // self.block_size]
        offsets = tokens % self.block_size
        self.k_pools[layer][blocks, :, offsets] = k.transpose(0, 1).to(self.dtype)
        self.v_pools[layer][blocks, :, offsets] = v.transpose(0, 1).to(self.dtype)

    def gather(self, layer: int, seq_id, length: Optional[int] = None) -> tuple[Tensor, Tensor]:
        """The sequence's keys and values ``[Hkv, length, D]`` (a copy; the attention kernel does not need it)."""
        seq = self.seqs[seq_id]
        n = seq.length if length is None else length
        table = torch.tensor(seq.blocks or [0], device=self.device)
        return gather_blocks(self.k_pools[layer], table, n), gather_blocks(self.v_pools[layer], table, n)

    def block_tables(self, seq_ids) -> Tensor:
        """``[B, max_blocks]`` int32 (padded with 0)."""
        width = max([len(self.seqs[s].blocks) for s in seq_ids] + [1])
        rows = [self.seqs[s].blocks + [0] * (width - len(self.seqs[s].blocks)) for s in seq_ids]
        return torch.tensor(rows, dtype=torch.int32, device=self.device)

    def attend(self, layer: int, q: Tensor, seq_ids, impl: str = "auto") -> Tensor:
        """Decode attention ``q [B, Hq, D]`` of the given sequences straight from the pool (paged kernel)."""
        lengths = torch.tensor([self.seqs[s].length for s in seq_ids], device=self.device)
        o, _ = paged_decode_attention(
            q, self.k_pools[layer], self.v_pools[layer], self.block_tables(seq_ids), lengths, impl=impl
        )
        return o

    def kv_bytes(self) -> int:
        """Bytes of the allocated blocks (all layers, keys and values)."""
        used = self.allocator.num_blocks - self.allocator.num_free
        return (
            used
            * 2
            * self.n_layers
            * self.n_kv_heads
            * self.block_size
            * self.head_dim
            * self.k_pools[0].element_size()
        )

    # -- shared prefixes -----------------------------------------------------------------------------------------
    def register_prefix(self, token_ids: tuple, seq_id) -> None:
        """Remember that sequence ``seq_id`` holds the KV of ``token_ids`` (a shared prefix, e.g. a system prompt)."""
        if self.seqs[seq_id].length != len(token_ids):
            raise ValueError("the prefix sequence must hold exactly the prefix's tokens")
        self.prefixes[tuple(token_ids)] = seq_id

    def longest_prefix(self, token_ids) -> tuple:
        """The longest registered prefix of ``token_ids`` (shorter than the whole prompt): ``(tokens, seq_id)`` or
        ``((), None)``."""
        best = ((), None)
        ids = tuple(token_ids)
        for prefix, seq_id in self.prefixes.items():
            if len(best[0]) < len(prefix) < len(ids) and ids[: len(prefix)] == prefix:
                best = (prefix, seq_id)
        return best

    # -- one forward over several sequences ----------------------------------------------------------------------
    def batch(self, seq_ids) -> "PagedBatch":
        return PagedBatch(self, list(seq_ids))


class PagedBatch(KVCache):
    """The minimal LVLM's cache protocol over sequences of a ``PagedKVCache`` for one forward: row b continues
    sequence ``seq_ids[b]`` (logical positions = its stored token count). Reserve the chunk's slots before the
    forward (``PagedKVCache.reserve``), call ``commit()`` after it."""

    def __init__(self, paged: PagedKVCache, seq_ids: list):
        starts = torch.tensor([paged.seqs[s].length for s in seq_ids], dtype=torch.long, device=paged.device)
        super().__init__(paged.n_layers, len(seq_ids), paged.device)
        self.paged, self.seq_ids, self.starts = paged, seq_ids, starts
        self.next_position = starts.clone()
        self._len = starts[None].repeat(paged.n_layers, 1)
        self.n_new: Optional[Tensor] = None

    def lengths(self, layer: int) -> Tensor:
        return self._len[layer]

    def max_length_bound(self, layer: int) -> int:
        return int(self._len[layer].max())

    def update(self, layer, k_new, v_new, positions, n_new) -> AttendKV:
        B, H, T, D = k_new.shape
        if B != len(self.seq_ids):
            raise ValueError(f"batch of {B} rows for {len(self.seq_ids)} sequences")
        width = int(self.starts.max()) + T
        k_out = torch.zeros(B, H, width, D, dtype=self.paged.dtype, device=self.paged.device)
        v_out = torch.zeros_like(k_out)
        pos_out = torch.full((B, width), -1, dtype=torch.long, device=self.paged.device)
        for b, seq_id in enumerate(self.seq_ids):
            start, n = int(self.starts[b]), int(n_new[b])
            self.paged.write(layer, seq_id, start, k_new[b, :, :n], v_new[b, :, :n])
            k, v = self.paged.gather(layer, seq_id, start + n)
            k_out[b, :, : start + n], v_out[b, :, : start + n] = k, v
            pos_out[b, : start + n] = torch.arange(start + n, device=self.paged.device)
        self._len[layer] = self.starts + n_new
        self.n_new = n_new.clone()
        return AttendKV(k_out, v_out, self.starts + T, pos_out)

    def commit(self) -> None:
        """Record the tokens this forward stored (call once, after the forward)."""
        for seq_id, start, n in zip(self.seq_ids, self.starts.tolist(), self.n_new.tolist()):
            self.paged.seqs[seq_id].length = start + n

    def rollback(self, n) -> None:
        raise NotImplementedError("a PagedBatch lives for one forward; roll back the PagedKVCache sequences instead")
