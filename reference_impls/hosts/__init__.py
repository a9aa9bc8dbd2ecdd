"""Hosts: what a technique is applied to. ``host_for(model)`` returns the one host object of a model (so several
techniques attached to the same model share it): :class:`MinimalHost` for ``MinimalLVLM``, :class:`HFHost` for the
Hugging Face classes of ``registry.HF_CLASSES``. A host attaches techniques of each kind (see
``reference_impls.technique``) and records :class:`~reference_impls.technique.RunStats`.
"""

from __future__ import annotations

import weakref

from reference_impls.registry import HF_CLASSES
from reference_impls.technique import UnsupportedModel

__all__ = ["host_for", "host_name"]

_HOSTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def host_name(model) -> str | None:
    """The registry host name of ``model`` (None when it is not a supported model)."""
    from reference_impls.models.minimal_lvlm import MinimalLVLM

    if isinstance(model, MinimalLVLM):
        return "minimal"
    return HF_CLASSES.get(type(model).__name__)


def host_for(model):
    """The host of ``model``; :class:`UnsupportedModel` for any other model class."""
    try:
        host = _HOSTS.get(model)
    except TypeError:  # not weak-referenceable: certainly not a supported model
        host = None
    if host is not None:
        return host
    name = host_name(model)
    if name is None:
        raise UnsupportedModel(
            f"{type(model).__name__} is not a supported model; supported: MinimalLVLM, {', '.join(HF_CLASSES)}"
        )
    if name == "minimal":
        from reference_impls.hosts.minimal import MinimalHost

        host = MinimalHost(model)
    else:
        from reference_impls.hosts.hf import HFHost

        host = HFHost(model, name)
    _HOSTS[model] = host
    return host
