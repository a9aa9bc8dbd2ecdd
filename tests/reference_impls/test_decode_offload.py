"""KV-cache offloading (decode/offload.py): generation through the offloaded cache equals the static cache's on
ragged prompts with images and GQA, with and without prefetch; at most one (two with prefetch) layers are resident;
the protocol's rollback and overflow behave like the static cache's."""

import pytest
import torch

from reference_impls.decode.offload import OffloadedKVCache
from reference_impls.models import MinimalLVLM
from reference_impls.models.kv_cache import StaticKVCache
from tests.reference_impls._lvlm_prompts import image_prompt, tiny_model

pytestmark = pytest.mark.usefixtures("single_torch_thread")

N_NEW = 8


@pytest.fixture(scope="module")
def case():
    model = tiny_model(n_layers=3)
    assert model.cfg.n_kv_heads < model.cfg.n_heads  # GQA
    n = model.cfg.n_visual_tokens
    ids, lengths, pixels = image_prompt(model.cfg, starts=[2, 2, 2], lengths=[15 + n, 10 + n, 13 + n])
    return model, ids, pixels, lengths


@pytest.mark.parametrize("prefetch", [False, True])
def test_generation_equals_the_static_cache(case, prefetch):
    model, ids, pixels, lengths = case
    cfg, (B, T) = model.cfg, ids.shape
    want = model.generate(ids, pixels, max_new_tokens=N_NEW, lengths=lengths)
    cache = OffloadedKVCache.for_model(cfg, B, T + N_NEW, prefetch=prefetch)
    out = model.generate(ids, pixels, max_new_tokens=N_NEW, lengths=lengths, cache=cache)
    assert torch.equal(out, want)
    assert all(k.device == torch.device("cpu") for k in cache.keys)
    layer = 2 * B * cfg.n_kv_heads * (T + N_NEW - 1) * cfg.head_dim * 4  # one layer's K/V at the last step, fp32
    assert cache.peak_resident_bytes == (2 if prefetch else 1) * layer < cfg.n_layers * layer


def test_protocol_matches_the_static_cache_through_rollback():
    B, H, D, cap = 2, 2, 8, 12
    static, offloaded = StaticKVCache(2, B, H, D, cap), OffloadedKVCache(2, B, H, D, cap, prefetch=True)
    g = torch.Generator().manual_seed(1)

    def step(T, n_new):
        k, v = torch.randn(B, H, T, D, generator=g), torch.randn(B, H, T, D, generator=g)
        pos = torch.arange(T)[None].repeat(B, 1)
        for layer in range(2):
            a, b = static.update(layer, k, v, pos, n_new), offloaded.update(layer, k, v, pos, n_new)
            assert all(torch.equal(x, y) for x, y in zip(a, b))

    step(5, torch.tensor([5, 3]))
    step(1, torch.tensor([1, 1]))
    static.rollback(1)
    offloaded.rollback(1)
    step(2, torch.tensor([2, 1]))
    assert torch.equal(static.lengths(1), offloaded.lengths(1))
    with pytest.raises(ValueError, match="overflow"):
        offloaded.update(0, *(torch.zeros(B, H, cap, D),) * 2, torch.zeros(B, cap, dtype=torch.long), torch.ones(B))


@pytest.mark.gpu
@pytest.mark.parametrize("prefetch", [False, True])
def test_gpu_offload_to_pinned_host_memory_equals_the_static_cache(case, prefetch):
    model, ids, pixels, lengths = case
    cfg, (B, T) = model.cfg, ids.shape
    gpu_model = MinimalLVLM(cfg, seed=0, device="cuda")
    args = (ids.cuda(), pixels.cuda())
    want = gpu_model.generate(*args, max_new_tokens=N_NEW, lengths=lengths.cuda())
    cache = OffloadedKVCache.for_model(cfg, B, T + N_NEW, device="cuda", prefetch=prefetch)
    out = gpu_model.generate(*args, max_new_tokens=N_NEW, lengths=lengths.cuda(), cache=cache)
    assert torch.equal(out, want)
    assert all(k.device.type == "cpu" and k.is_pinned() for k in cache.keys)
    assert cache.peak_resident_bytes < sum(2 * k.numel() * k.element_size() for k in cache.keys)
