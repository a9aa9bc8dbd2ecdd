"""The registry sweep: every technique x every host it claims, on tiny random-weight models (``_hosts.py``), batch 2
with different prompt lengths (batch 1 for speculative decoding, whose references are batch 1).

* identity: the registry's identity setting reproduces the unmodified model's greedy ``generate`` exactly;
* compress: the registry's compressing setting really shortens what it claims to (the tokens the decoder layers
  process, the KV cache rows, the visual tokens, the weight bytes, the target model's forward calls), checked on
  the lengths the host recorded;
* wrong model: applying the technique to a model it does not support raises one clear ``UnsupportedModel`` line.
"""

import pytest
import torch

from reference_impls import registry
from reference_impls.technique import UnsupportedModel
from tests.reference_impls._hosts import build

pytestmark = pytest.mark.usefixtures("single_torch_thread")

pytest.importorskip("transformers")

N_NEW = 6
CASES = [(e.name, host) for e in registry.ENTRIES for host in e.hosts]


def _technique(entry, setting, case):
    cls = registry.load(entry)
    kw = dict(getattr(entry, setting))
    if cls.stage == "decoding" and setting == "compress":
        kw["draft_layers"] = case.n_layers  # a self-draft that agrees with the target: drafts are accepted
    return cls(**kw)


def _single_row(case, max_new_tokens):
    """Batch 1 (speculative decoding): the first prompt of the minimal host's batch."""
    cfg = case.model.cfg
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.image_token_id, (1, 14 + cfg.n_visual_tokens), generator=g)
    ids[0, 2 : 2 + cfg.n_visual_tokens] = cfg.image_token_id
    pix = torch.randn(1, 3, cfg.vision.image_size, cfg.vision.image_size, generator=g)
    return case.model.generate(ids, pix, max_new_tokens=max_new_tokens)


def _generate(case, technique=None):
    entry_stage = getattr(technique, "stage", None)
    if entry_stage == "decoding" or (technique is None and getattr(case, "_single", False)):
        return _single_row(case, N_NEW)
    visual = None
    if entry_stage == "encoder" and case.image_tokens is not None:
        visual = (
            technique.image_tokens(case.model)
            if hasattr(technique, "image_tokens")
            else technique.tokens_per_image(case.image_tokens)
        )
    return case.generate(N_NEW, visual)


@pytest.fixture(scope="module")
def baselines():
    return {}


def _baseline(baselines, host, single):
    key = (host, single)
    if key not in baselines:
        case = build(host)
        with torch.no_grad():
            baselines[key] = _single_row(case, N_NEW) if single else case.generate(N_NEW)
    return baselines[key]


@pytest.mark.parametrize("name,host", [(n, h) for n, h in CASES if registry.get(n).identity is not None])
def test_identity_setting_reproduces_generate(baselines, name, host):
    """(Lossy entries -- kv_quant, weight_quant -- list no identity setting.)"""
    entry = registry.get(name)
    case = build(host)
    technique = _technique(entry, "identity", case)
    base = _baseline(baselines, host, technique.stage == "decoding")
    with torch.no_grad(), technique(case.model):
        out = _generate(case, technique)
    assert torch.equal(out, base)


def _full_lengths(stats):
    return [c.reshape(c.shape[0], -1).amax(1) for c in stats.cache_lengths]


@pytest.mark.parametrize("name,host", CASES)
def test_compressing_setting_shortens(name, host):
    entry = registry.get(name)
    case = build(host)
    technique = _technique(entry, "compress", case)
    full_stats = None
    if entry.identity is not None and technique.stage in ("decoder", "kv", "encoder"):
        with torch.no_grad(), _technique(entry, "identity", case)(case.model) as run:
            _generate(case, _technique(entry, "identity", case))
        full_stats = run.stats
    with torch.no_grad(), technique(case.model) as run:
        out = _generate(case, technique)
    stats = run.stats
    assert out.shape[1] == N_NEW
    if technique.stage == "decoder":
        tokens = stats.layer_tokens  # [n_layers, B]
        assert torch.equal(tokens[0], full_stats.layer_tokens[0])  # the prompt is whole at layer 0
        assert bool((tokens[-1] < tokens[0]).all())  # ... and shorter in the last layer, per row
        kept, full = _full_lengths(stats), _full_lengths(full_stats)
        assert bool((kept[-1] < full[-1]).all())  # so is the last layer's cache
    elif technique.stage == "kv":
        kept, full = _full_lengths(stats), _full_lengths(full_stats) if full_stats else _full_lengths(stats)
        if name == "kv_quant":  # same rows, a quarter of fp32's bytes + scales
            rows = sum(int(c.sum()) for c in stats.cache_lengths)
            head_dim = case.model.cfg.head_dim if host == "minimal" else 16
            assert stats.kv_bytes < rows * head_dim * 4 * 2 / 3
        elif name == "think":  # same rows, fewer key channels
            assert all(torch.equal(k, f) for k, f in zip(kept, full))
            assert stats.kv_bytes < full_stats.kv_bytes
        else:
            assert all(bool((k <= f).all()) for k, f in zip(kept, full))
            assert sum(int(k.sum()) for k in kept) < sum(int(f.sum()) for f in full)
        if name in ("streamingllm", "h2o"):  # a fixed per-row budget of 10 rows
            assert all(torch.equal(k, torch.clamp(f, max=10)) for k, f in zip(kept, full))
    elif technique.stage == "encoder":
        if host == "minimal":
            assert bool((stats.layer_tokens[0] < full_stats.layer_tokens[0]).all())
        elif host == "llava":  # what the projector received per image
            want = technique.image_tokens(case.model) if name == "tome" else technique.tokens_per_image(16)
            assert stats.extra["visual_tokens_per_image"] == want < 16
        else:  # Qwen: the technique rewrites the full prompt and records the columns it kept
            kept = stats.extra["kept_columns"]
            assert bool(((kept >= 0).sum(1) < case.prompt_lengths).all())
    elif technique.stage == "weights":
        report = stats.extra["weight_quant"]
        assert report.quantized and report.bytes_after * 3 < report.bytes_before
    elif technique.stage == "decoding":
        spec = stats.extra["spec_stats"]
        assert spec.target_calls < N_NEW  # fewer target forwards than tokens
        assert torch.equal(out, _single_row(case, N_NEW))  # and still the plain greedy tokens
        if name == "specvlm":  # the draft saw fewer visual tokens
            assert spec.draft_visual_tokens < case.model.cfg.n_visual_tokens
    # the model is unchanged afterwards
    assert getattr(case.model, "techniques", []) == []


@pytest.mark.parametrize("name", [e.name for e in registry.ENTRIES if e.hosts])
def test_wrong_model_gets_one_clear_error(name):
    entry = registry.get(name)
    technique = registry.load(entry)(**(entry.identity or entry.compress))
    others = [h for h in registry.ALL_HOSTS if h not in entry.hosts]
    model = build(others[0]).model if others else torch.nn.Linear(2, 2)
    with pytest.raises(UnsupportedModel) as err:
        technique(model)
    message = str(err.value)
    assert "\n" not in message and (name in message or type(model).__name__ in message)
