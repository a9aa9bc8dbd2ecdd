"""PagedAttention (arXiv 2309.06180): block allocation, sharing and copy-on-write on hand-worked tables, the
paged decode kernel against its specification, and the paged cache inside the minimal LVLM."""

import pytest
import torch

from reference_impls.decode.kv.paged import BlockAllocator, OutOfBlocks, PagedKVCache
from reference_impls.models import LVLMConfig, MinimalLVLM
from reference_impls.ops._triton import launch_counts
from reference_impls.ops.paged_attention import naive_paged_decode_attention, paged_decode_attention
from tests.reference_impls._utils import eager_attention_probs, randn

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_allocator_reference_counts():
    alloc = BlockAllocator(3)
    a, b = alloc.allocate(), alloc.allocate()
    alloc.share(a)
    alloc.release(a)
    assert alloc.num_free == 1 and alloc.ref_count[a] == 1
    alloc.release(a)
    assert alloc.free_blocks == [2, a]  # freed blocks are reused last
    alloc.allocate(), alloc.allocate()
    with pytest.raises(OutOfBlocks):
        alloc.allocate()
    alloc.release(b)
    with pytest.raises(RuntimeError):  # released more often than allocated
        alloc.release(b)


def _store(paged, seq, start, n, seed):
    k, v = (
        randn(paged.n_kv_heads, n, paged.head_dim, seed=seed),
        randn(paged.n_kv_heads, n, paged.head_dim, seed=seed + 1),
    )
    paged.reserve(seq, n)
    for layer in range(paged.n_layers):
        paged.write(layer, seq, start, k, v)
    paged.seqs[seq].length = start + n
    return k, v


def test_fork_and_copy_on_write():
    paged = PagedKVCache(1, 2, 4, num_blocks=6, block_size=4)
    paged.add("a")
    ka, va = _store(paged, "a", 0, 6, seed=0)  # blocks [0 full, 1 half full]
    assert paged.seqs["a"].blocks == [0, 1]
    paged.fork("a", "b")
    assert paged.allocator.ref_count[:2] == [2, 2]
    assert paged.blocks_needed("b", 1) == 1  # the shared half-full block must be copied
    kb, _ = _store(paged, "b", 6, 1, seed=5)
    assert paged.seqs["b"].blocks == [0, 2] and paged.copies == 1
    assert paged.allocator.ref_count[:3] == [2, 1, 1]
    k_a, v_a = paged.gather(0, "a")
    assert torch.equal(k_a, ka) and torch.equal(v_a, va)  # the parent is untouched
    k_b, _ = paged.gather(0, "b")
    assert torch.equal(k_b, torch.cat([ka, kb], 1))
    _store(paged, "a", 6, 3, seed=9)  # now sole owner of block 1: writes in place, + block 3
    assert paged.seqs["a"].blocks == [0, 1, 3] and paged.copies == 1
    paged.free("a"), paged.free("b")
    assert paged.allocator.num_free == 6
    paged.add("c")
    with pytest.raises(OutOfBlocks):
        paged.reserve("c", 25)  # 7 blocks > 6
    assert paged.seqs["c"].blocks == []  # a failed reservation changes nothing


@pytest.mark.parametrize(
    "Hq,Hkv,D,block_size,lengths",
    [(4, 2, 16, 16, [40, 17, 1, 0]), (3, 3, 8, 16, [5, 33]), (8, 1, 32, 32, [64, 31, 70])],
)
def test_kernel_matches_spec(Hq, Hkv, D, block_size, lengths):
    B = len(lengths)
    n_blocks = [-(-n // block_size) for n in lengths]
    num_blocks = sum(n_blocks) + 2
    perm = torch.randperm(num_blocks, generator=torch.Generator().manual_seed(D))  # scattered physical blocks
    tables = torch.zeros(B, max(n_blocks + [1]), dtype=torch.long)
    used = 0
    for b, n in enumerate(n_blocks):
        tables[b, :n] = perm[used : used + n]
        used += n
    q = randn(B, Hq, D, seed=1)
    k_pool, v_pool = randn(num_blocks, Hkv, block_size, D, seed=2), randn(num_blocks, Hkv, block_size, D, seed=3)
    lens = torch.tensor(lengths)
    ref_o, ref_lse = naive_paged_decode_attention(q, k_pool, v_pool, tables, lens)
    before = launch_counts["_paged_decode_kernel"]
    o, lse = paged_decode_attention(q, k_pool, v_pool, tables, lens, impl="triton")
    assert launch_counts["_paged_decode_kernel"] == before + 1
    assert torch.allclose(o, ref_o, atol=1e-5)
    assert torch.equal(torch.isinf(lse), torch.isinf(ref_lse)) and torch.allclose(
        lse[lens > 0], ref_lse[lens > 0], atol=1e-5
    )
    # the specification against independent eager attention over the gathered sequence
    for b, n in enumerate(lengths):
        if n == 0:
            assert bool((ref_o[b] == 0).all())
            continue
        blocks = k_pool[tables[b, : n_blocks[b]]].permute(1, 0, 2, 3).reshape(Hkv, -1, D)[:, :n]
        vals = v_pool[tables[b, : n_blocks[b]]].permute(1, 0, 2, 3).reshape(Hkv, -1, D)[:, :n]
        p = eager_attention_probs(q[b : b + 1, :, None], blocks[None], causal=False)[0, :, 0]
        expected = torch.einsum("hn,hnd->hd", p, vals.double().repeat_interleave(Hq // Hkv, 0))
        assert torch.allclose(ref_o[b].double(), expected, atol=1e-5)


def test_bad_kernel_arguments():
    q, pool = torch.zeros(1, 2, 8), torch.zeros(3, 1, 4, 8)
    with pytest.raises(ValueError):
        paged_decode_attention(q, pool, pool, torch.tensor([[0]]), torch.tensor([5]))  # 5 > 1 block of 4
    with pytest.raises(ValueError):
        paged_decode_attention(q, pool, pool, torch.tensor([[7, 0]]), torch.tensor([5]))  # block id 7
    with pytest.raises(ValueError):
        paged_decode_attention(q, pool, pool, torch.tensor([[0, 1]]), torch.tensor([5]), impl="triton")  # size 4


@torch.no_grad()
def test_paged_batch_reproduces_the_static_cache():
    model = MinimalLVLM(LVLMConfig.tiny(n_layers=2, init_std=0.1), seed=0)
    ids = torch.randint(0, 250, (3, 19), generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([19, 11, 16])
    static = model.new_cache(3, 32)
    ref = [model.forward_tokens(input_ids=ids, cache=static, lengths=lengths)]
    paged = PagedKVCache.for_model(model.cfg, num_blocks=8, block_size=16)
    for s, n in zip("abc", lengths.tolist()):
        paged.add(s)
        paged.reserve(s, n)
    batch = paged.batch("abc")
    out = [model.forward_tokens(input_ids=ids, cache=batch, lengths=lengths)]
    batch.commit()
    tok = torch.tensor([[5], [6], [7]])
    for _ in range(3):
        ref.append(model.forward_tokens(input_ids=tok, cache=static))
        for s in "abc":
            paged.reserve(s, 1)
        batch = paged.batch("abc")
        out.append(model.forward_tokens(input_ids=tok, cache=batch))
        batch.commit()
    valid = torch.arange(19)[None, :] < lengths[:, None]
    assert torch.equal(out[0][valid], ref[0][valid])  # prefill: every real position
    for a, b in zip(out[1:], ref[1:]):
        assert torch.equal(a, b)  # decode steps
    assert [paged.length(s) for s in "abc"] == [22, 14, 19]
    # the paged kernel reads the same keys the model attended to
    q = randn(3, model.cfg.n_heads, model.cfg.head_dim, seed=4)
    o = paged.attend(1, q, list("abc"), impl="naive")
    o_t = paged.attend(1, q, list("abc"), impl="triton")
    assert torch.allclose(o, o_t, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_kernel_matches_spec(dtype):
    B, Hq, Hkv, D, bs = 8, 32, 8, 128, 16
    lengths = torch.tensor([1, 17, 300, 1024, 15, 16, 33, 2000])
    n_blocks = (-(-lengths // bs)).tolist()
    tables = torch.zeros(B, max(n_blocks), dtype=torch.long)
    perm = torch.randperm(sum(n_blocks), generator=torch.Generator().manual_seed(0))
    used = 0
    for b, n in enumerate(n_blocks):
        tables[b, :n] = perm[used : used + n]
        used += n
    q = randn(B, Hq, D, seed=1)
    k_pool, v_pool = randn(sum(n_blocks), Hkv, bs, D, seed=2), randn(sum(n_blocks), Hkv, bs, D, seed=3)
    ref, _ = naive_paged_decode_attention(q, k_pool, v_pool, tables, lengths)
    o, _ = paged_decode_attention(
        q.cuda().to(dtype),
        k_pool.cuda().to(dtype),
        v_pool.cuda().to(dtype),
        tables.cuda(),
        lengths.cuda(),
        impl="triton",
    )
    assert (o.float().cpu() - ref).abs().max() < 2e-2
