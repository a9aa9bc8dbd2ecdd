"""Shared Attention (arXiv 2407.12866): an independent hand-built two-layer computation, the SDPA path against the
all-eager specification (ragged batch, GQA, decode steps), identity, and the key bytes saved."""

import pytest
import torch

from reference_impls.decode.shared_attention import SharedAttention, naive_shared_attention_forward
from reference_impls.models import LVLMConfig, MinimalLVLM
from tests.reference_impls._utils import randint

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def model():
    return MinimalLVLM(LVLMConfig.tiny(n_layers=4, init_std=0.1), seed=0)


@torch.no_grad()
def test_independent_two_layer_computation():
    model = MinimalLVLM(LVLMConfig.tiny(n_layers=2, init_std=0.1), seed=1)
    ids = randint(0, 250, (1, 7), seed=1)
    pos = torch.arange(7)[None]
    x = model.embed_tokens(ids)
    weights = None
    for l, layer in enumerate(model.layers):
        h = layer.input_norm(x)
        q, k, v = layer.attn.project_qkv(h, pos)
        if l == 0:  # layer 0 computes its causal softmax weights
            s = q @ k.repeat_interleave(2, 1).transpose(-1, -2) / 4.0  # head_dim 16
            weights = torch.softmax(s.masked_fill(~torch.ones(7, 7, dtype=torch.bool).tril(), float("-inf")), -1)
        o = weights @ v.repeat_interleave(2, 1)  # layer 1 reuses them with its own values
        x = x + layer.attn.o_proj(o.transpose(1, 2).reshape(1, 7, -1))
        x = x + layer.mlp(layer.post_norm(x))
    assert torch.allclose(SharedAttention((1,)).forward(model, ids), model.logits(x), atol=1e-5)


@pytest.mark.parametrize("share", [(2, 3), (1,), (3,)])
@torch.no_grad()
def test_sdpa_path_matches_eager_spec(model, share):
    ids = randint(0, 250, (3, 11), seed=2)
    lengths = torch.tensor([11, 6, 9])
    caches = [model.new_cache(3, 16), model.new_cache(3, 16)]
    out = SharedAttention(share).forward(model, ids, caches[0], lengths)
    ref = naive_shared_attention_forward(model, ids, share, caches[1], lengths)
    valid = torch.arange(11)[None, :] < lengths[:, None]
    assert torch.allclose(out[valid], ref[valid], atol=1e-5)
    tok = torch.tensor([[3], [4], [5]])
    for _ in range(2):  # decode steps over the caches
        out = SharedAttention(share).forward(model, tok, caches[0])
        ref = naive_shared_attention_forward(model, tok, share, caches[1])
        assert torch.allclose(out, ref, atol=1e-5)
    assert bool((caches[0].keys[share[0]] == 0).all())  # shared layers store no keys


@torch.no_grad()
def test_identity_and_effect(model):
    ids = randint(0, 250, (2, 9), seed=3)
    lengths = torch.tensor([9, 5])
    ref = model.forward_tokens(input_ids=ids, lengths=lengths)
    assert torch.equal(SharedAttention(()).forward(model, ids, lengths=lengths), ref)
    assert torch.equal(
        SharedAttention(()).generate(model, ids, 5, lengths), model.generate(ids, max_new_tokens=5, lengths=lengths)
    )
    shared = SharedAttention((2, 3)).forward(model, ids, lengths=lengths)
    assert not torch.allclose(shared, ref, atol=1e-4)
    cfg = model.cfg
    assert SharedAttention((2, 3)).kv_bytes(model, 10) == 10 * cfg.n_kv_heads * cfg.head_dim * 4 * (8 - 2)
    with pytest.raises(ValueError):
        SharedAttention((0,)).forward(model, ids)
