"""PEVLM parallel encoding: mask == naive, block-sparse == dense, one block == full causal attention."""

import pytest
import torch

from reference_impls.models.config import LVLMConfig
from reference_impls.models.minimal_lvlm import MinimalLVLM
from reference_impls.prefill.pevlm import (
    PEVLMLayout,
    blocksparse_pevlm_attention,
    naive_pevlm_attention,
    naive_pevlm_mask,
    pevlm_attention,
    pevlm_mask,
    pevlm_positions,
    pevlm_prefill,
)
from tests.reference_impls._utils import (
    randn,
    rel_rms_err,
)

pytestmark = pytest.mark.usefixtures("single_torch_thread")

LAYOUTS = [
    dict(prefix_len=5, n_frames=9, tokens_per_frame=7, suffix_len=4, sink_frames=1, frames_per_block=3),
    dict(prefix_len=0, n_frames=4, tokens_per_frame=5, suffix_len=0, sink_frames=0, frames_per_block=1),
    dict(prefix_len=3, n_frames=6, tokens_per_frame=1, suffix_len=1, sink_frames=2, frames_per_block=4),
    dict(prefix_len=2, n_frames=3, tokens_per_frame=4, suffix_len=3, sink_frames=3, frames_per_block=2),  # no blocks
]


@pytest.mark.parametrize("kw", LAYOUTS)
def test_mask_matches_naive(kw):
    lay = PEVLMLayout.from_frames(**kw)
    assert torch.equal(pevlm_mask(lay), naive_pevlm_mask(lay))
    pos = pevlm_positions(lay)
    assert bool((pos[1:] > pos[:-1]).all()) and pos.numel() == lay.total_len


@pytest.mark.parametrize("kw", LAYOUTS)
@pytest.mark.parametrize("heads", [(4, 4), (4, 2)])
@pytest.mark.parametrize("bias", [0.0, 0.9])
def test_blocksparse_equals_dense(kw, heads, bias):
    lay = PEVLMLayout.from_frames(**kw)
    L = lay.total_len
    q = randn(2, heads[0], L, 16, seed=1)
    k, v = randn(2, heads[1], L, 16, seed=2), randn(2, heads[1], L, 16, seed=3)
    ref = naive_pevlm_attention(q, k, v, lay, sink_logit_bias=bias)
    out = pevlm_attention(q, k, v, lay, sink_logit_bias=bias, impl="torch")
    assert rel_rms_err(out, ref) <= 1e-5


@pytest.mark.parametrize("kw", LAYOUTS)
@pytest.mark.parametrize("heads", [(4, 4), (6, 2)])
def test_triton_context_rows_equal_dense(kw, heads):
    pytest.importorskip("triton")
    from reference_impls.ops._triton import launch_counts

    lay = PEVLMLayout.from_frames(**kw)
    L = lay.total_len
    q = randn(1, heads[0], L, 24, seed=7)  # D = 24: not a power of two
    k, v = randn(1, heads[1], L, 24, seed=8), randn(1, heads[1], L, 24, seed=9)
    before = launch_counts["_pevlm_context_kernel"]
    out = pevlm_attention(q, k, v, lay, impl="triton")
    assert launch_counts["_pevlm_context_kernel"] == before + (1 if lay.n_blocks else 0)
    assert rel_rms_err(out, naive_pevlm_attention(q, k, v, lay)) <= 1e-5


def test_triton_context_rows_every_autotune_tile():
    """Every (BLOCK_M, BLOCK_N) of the autotune space, forced through the interpreter (CUDA picks among these)."""
    pytest.importorskip("triton")
    from reference_impls.prefill.pevlm import naive_pevlm_attention
    from reference_impls.prefill.pevlm_triton import pevlm_configs, triton_pevlm_context_rows

    lay = PEVLMLayout.from_frames(5, 9, 13, 4, sink_frames=1, frames_per_block=3)
    L, S, Q0 = lay.total_len, lay.sink_len, lay.query_start
    q, k, v = randn(1, 4, L, 16, seed=11), randn(1, 2, L, 16, seed=12), randn(1, 2, L, 16, seed=13)
    ref = naive_pevlm_attention(q, k, v, lay)
    starts = torch.zeros(L, dtype=torch.int32)  # first key of each context row's own block
    for s0, n in zip(lay.block_starts, lay.block_lens):
        starts[s0 : s0 + n] = s0
    for cfg in pevlm_configs():
        out = torch.zeros_like(q)
        triton_pevlm_context_rows(
            q, k, v, out, starts, S, Q0, 16**-0.5, block_m=cfg.kwargs["BLOCK_M"], block_n=cfg.kwargs["BLOCK_N"]
        )
        assert rel_rms_err(out[:, :, S:Q0], ref[:, :, S:Q0]) <= 1e-5, cfg.kwargs


def test_one_block_equals_full_causal_attention():
    lay = PEVLMLayout.from_frames(4, 6, 5, 3, sink_frames=1, frames_per_block=5)
    assert lay.n_blocks == 1
    L = lay.total_len
    q, k, v = randn(1, 2, L, 8, seed=4), randn(1, 2, L, 8, seed=5), randn(1, 2, L, 8, seed=6)
    assert torch.equal(pevlm_mask(lay), torch.ones(L, L, dtype=torch.bool).tril())
    full = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert rel_rms_err(blocksparse_pevlm_attention(q, k, v, lay), full) <= 1e-5


def test_prefill_on_minimal_lvlm():
    model = MinimalLVLM(LVLMConfig.tiny(), seed=0)
    one = PEVLMLayout.from_frames(3, 5, 4, 2, sink_frames=1, frames_per_block=8)  # 1 context block
    ids = torch.randint(0, 250, (2, one.total_len), generator=torch.Generator().manual_seed(0))
    logits, cache = pevlm_prefill(model, ids, one)
    ref = model.prefill(ids).logits
    torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-5)
    causal = model.run_decoder(
        model.embed(ids)[0],
        cache=model.new_cache(2, 64),
        chunk_mask=torch.ones(one.total_len, one.total_len, dtype=torch.bool).tril().expand(2, -1, -1),
    )[0]
    assert torch.equal(logits, model.logits(causal.hidden[:, -1]))  # same path: bit-exact
    many = PEVLMLayout.from_frames(3, 5, 4, 2, sink_frames=1, frames_per_block=1)  # 4 blocks
    logits_m, cache_m = pevlm_prefill(model, ids, many)
    assert int(cache_m.lengths(0)[0]) == many.total_len  # full-size KV cache
    assert not torch.allclose(logits_m, ref, atol=1e-7)  # blocks really isolated
    step = model.decode_step(logits_m.argmax(-1), cache_m)  # decode continues
    assert step.shape == (2, model.cfg.vocab_size) and int(cache_m.next_position[0]) == many.total_len + 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="frames_per_block"):
        PEVLMLayout.from_frames(1, 4, 2, 1, frames_per_block=0)
    with pytest.raises(ValueError, match="sink_frames"):
        PEVLMLayout.from_frames(1, 4, 2, 1, sink_frames=5)
    lay = PEVLMLayout.from_frames(1, 4, 2, 1)
    with pytest.raises(ValueError, match="layout length"):
        naive_pevlm_attention(randn(1, 2, 5, 8), randn(1, 2, 5, 8), randn(1, 2, 5, 8), lay)
    with pytest.raises(ValueError, match="position mode"):
        pevlm_positions(lay, "restart")
    with pytest.raises(ValueError, match="impl"):
        pevlm_attention(randn(1, 2, 10, 8), randn(1, 2, 10, 8), randn(1, 2, 10, 8), lay, impl="flex")
    with pytest.raises(ValueError, match="sink_logit_bias"):
        pevlm_attention(
            randn(1, 2, 10, 8), randn(1, 2, 10, 8), randn(1, 2, 10, 8), lay, impl="triton", sink_logit_bias=1.0
        )


@pytest.mark.gpu
def test_blocksparse_gpu_bf16():
    lay = PEVLMLayout.from_frames(16, 32, 64, 16, sink_frames=1, frames_per_block=4)
    L = lay.total_len
    q = randn(1, 8, L, 64, seed=1, device="cuda", dtype=torch.bfloat16)
    k = randn(1, 2, L, 64, seed=2, device="cuda", dtype=torch.bfloat16)
    v = randn(1, 2, L, 64, seed=3, device="cuda", dtype=torch.bfloat16)
    ref = naive_pevlm_attention(q, k, v, lay)
    assert rel_rms_err(blocksparse_pevlm_attention(q, k, v, lay), ref) <= 2e-2
    assert rel_rms_err(pevlm_attention(q, k, v, lay, impl="triton"), ref) <= 2e-2
