"""The minimal LVLM as a host: attached techniques go into ``model.techniques``, which the model consults by kind
(token techniques run as hooks, a KV technique builds the cache, an encoder technique makes the image features, a
decoding technique runs ``generate``); weight techniques swap modules themselves."""

from __future__ import annotations

from reference_impls.technique import RunStats, Technique

SINGLE = ("kv", "encoder", "decoding")  # kinds of which one at a time may be attached


class MinimalHost:
    name = "minimal"

    def __init__(self, model):
        self.model = model
        self.stats = RunStats()
        self._detach: dict = {}

    @property
    def n_layers(self) -> int:
        return self.model.cfg.n_layers

    def cache_spec(self):
        return self.model.cache_spec()

    def attach(self, technique: Technique) -> None:
        attached = self.model.techniques
        if any(t is technique for t in attached) or id(technique) in self._detach:
            raise RuntimeError(f"{technique.name} is already attached to this model")
        if technique.stage in SINGLE and any(t.stage == technique.stage for t in attached):
            other = next(t for t in attached if t.stage == technique.stage)
            raise RuntimeError(
                f"{technique.name}: {other.name} is already attached ({technique.stage} techniques do not stack)"
            )
        if not attached and not self._detach:
            self.stats = RunStats()
            self.model.run_stats = self.stats
        if technique.stage == "weights":
            self._detach[id(technique)] = technique.attach(self)
        else:
            attached.append(technique)

    def detach(self, technique: Technique) -> None:
        undo = self._detach.pop(id(technique), None)
        if undo is not None:
            undo()
        self.model.techniques[:] = [t for t in self.model.techniques if t is not technique]
        if not self.model.techniques and not self._detach:
            self.model.run_stats = None
