"""The technique protocol: one small dataclass per technique, applied to a model as a context manager.

    with SnapKV(budget=0.25)(model):            # model: a Hugging Face LLaVA / Qwen2-VL / Llama ... or MinimalLVLM
        out = model.generate(**inputs)
    with FastV(k=2, ratio=0.5)(llava) as run:
        out = llava.generate(**inputs)
    run.stats.layer_tokens                      # tokens each decoder layer processed in the last prefill, [L, B]

A technique is a dataclass holding its parameters and its rule; ``technique(model)`` checks that the model is one
of the hosts the registry lists for it (:mod:`reference_impls.registry`) and returns an :class:`Applied` context
manager. Entering it attaches the technique to the model's host (:mod:`reference_impls.hosts`), leaving it detaches
it: nothing is monkeypatched and the model is unchanged afterwards. Several techniques of different kinds may be
active on one model at once (e.g. a token pruner and a KV policy).

Kinds (``stage``), and what a technique of that kind implements:

* ``"decoder"`` -- :class:`TokenTechnique`: prunes or merges the prompt's tokens between decoder layers during
  prefill through the hook protocol of ``reference_impls.models.hooks`` (``before_layer`` / ``score_rows`` /
  ``after_layer`` on a ``TokenState``). Both hosts drive the same methods.
* ``"kv"`` -- :class:`CacheTechnique`: ``make_cache(spec, batch_size)`` returns a cache implementing the protocol of
  ``reference_impls.models.kv_cache``; the minimal model uses it directly, Hugging Face models through a
  ``transformers`` ``Cache`` that wraps it (``hosts.hf.ReferenceCache``).
* ``"encoder"`` -- the minimal LVLM calls the technique's ``minimal_image_features``; a Hugging Face host runs it
  through its vision adapter (``hosts.hf_vision.vision_adapter``).
* ``"weights"``, ``"decoding"`` -- the technique implements ``attach(host)`` and returns a function that undoes it
  (the minimal LVLM runs a decoding technique's ``minimal_generate``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, ClassVar, Optional

__all__ = ["UnsupportedModel", "Technique", "TokenTechnique", "CacheTechnique", "CacheSpec", "Applied", "RunStats"]


class UnsupportedModel(ValueError):
    """A technique was applied to a model it does not support (one line naming the technique and the hosts)."""


@dataclass
class RunStats:
    """What the host saw during the last prefill and generation (filled by the host, read by ``Applied.stats``)."""

    layer_tokens: object = None  # LongTensor [n_layers, B]: tokens each decoder layer processed (prefill)
    kept_indices: object = None  # LongTensor [B, L']: original prompt columns kept by the last layer (-1: pad)
    kv_bytes: Optional[int] = None  # bytes of the kept K/V (+ scales) after the last forward
    cache_lengths: object = None  # list of [B] / [B, Hkv] kept rows per layer after the last forward
    prefills: int = 0  # prefills run while the technique was attached
    extra: dict = dataclasses.field(default_factory=dict)  # technique-specific records


@dataclass
class CacheSpec:
    """The shapes a KV cache needs, taken from the host model."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    dtype: object
    device: object
    inv_freq: object = None  # RoPE inverse frequencies [D/2] of 1-D RoPE hosts, None for M-RoPE
    rope_scaling: float = 1.0  # the RoPE tables' attention scaling (1 unless e.g. YaRN)


class Technique:
    """Base class. Subclasses are dataclasses; ``name`` is their registry name, ``stage`` their kind."""

    name: ClassVar[str] = ""
    stage: ClassVar[str] = ""

    def __call__(self, model) -> "Applied":
        from reference_impls import registry
        from reference_impls.hosts import host_for

        host = host_for(model)
        hosts = registry.get(self.name).hosts
        if host.name not in hosts:
            raise UnsupportedModel(
                f"{self.name} does not apply to {type(model).__name__} (host {host.name!r}); it "
                f"applies to: {', '.join(hosts) or 'no model (functions only)'}"
            )
        self.check_host(host)
        return Applied(self, host)

    def check_host(self, host) -> None:
        """Raise :class:`UnsupportedModel` when this configuration cannot run on ``host`` (default: it can)."""

    def attach(self, host) -> Callable[[], None]:
        """Attach to ``host`` and return the function that detaches (encoder / weights / decoding kinds)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement attach()")

    def fresh(self) -> "Technique":
        """A copy with its per-run state cleared (a technique object may be applied several times)."""
        return dataclasses.replace(self)


class TokenTechnique(Technique):
    """A token pruner / merger acting between decoder layers (see ``reference_impls.models.hooks``)."""

    stage: ClassVar[str] = "decoder"

    def before_layer(self, layer, state, ctx):
        return state

    def score_rows(self, layer, state):
        return None

    def after_layer(self, layer, state, ctx, colsum):
        return state


class CacheTechnique(Technique):
    """A KV-cache policy: ``make_cache`` builds the protocol cache for one generation."""

    stage: ClassVar[str] = "kv"

    def make_cache(self, spec: CacheSpec, batch_size: int):
        raise NotImplementedError


class Applied:
    """``technique(model)``: a context manager that attaches the technique while active."""

    def __init__(self, technique: Technique, host):
        self.technique, self.host = technique, host
        self._active = False

    def __enter__(self) -> "Applied":
        if self._active:
            raise RuntimeError(f"{self.technique.name} is already active on this model")
        self.host.attach(self.technique)
        self._active = True
        self._stats = self.host.stats
        return self

    def __exit__(self, exc_type, exc, tb):
        self._active = False
        self.host.detach(self.technique)
        return False

    @property
    def stats(self) -> RunStats:
        """What the host recorded while this application was active (shared by techniques attached together)."""
        return getattr(self, "_stats", None) or self.host.stats
