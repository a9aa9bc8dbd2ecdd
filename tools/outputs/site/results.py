"""Comparable results: the papers' claims grouped by a common setting (the same base model, the same pair of
quantities), so that a reader can compare like with like.

A *setting* is one of :data:`SETTINGS` (a claimed quantity against a budget, e.g. performance retained against the
share of visual tokens kept) on one base model. A claim joins a setting when its metric is the setting's metric, its
``setting.model`` names a single model (:func:`model_key`), and its budget is known: read from ``setting.budget``
("128 of 576 visual tokens", "90.3% of video tokens pruned", "10% of KV cache") or, failing that, from the paper's
own claim of the share it keeps or prunes on the same model. A setting is listed when at least
:data:`MIN_PAPERS` papers share it. Claims whose paper reports a baseline score (``setting.baseline_score``) for a
model and benchmark on which another paper reports a different one are flagged: their percentages are relative to
different baselines.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Mapping

from tools.catalogue.schema import Claim, Paper

MIN_PAPERS = 2


@dataclass(frozen=True)
class SettingKind:
    """A kind of comparable setting (same metric, model and budget kind) on the results page."""

    id: str
    title: str  # "{model}" is replaced by the model's name
    metrics: tuple[str, ...]  # the claimed quantity (y)
    budget: str  # "tokens": % of visual tokens kept; "kv": % of the KV cache kept
    x_label: str
    y_label: str


SETTINGS = (
    SettingKind(
        "tokens-performance",
        "Visual tokens kept vs performance retained on {model}",
        ("performance_retained",),
        "tokens",
        "visual tokens kept (%)",
        "performance retained (%)",
    ),
    SettingKind(
        "tokens-speedup",
        "Visual tokens kept vs speedup on {model}",
        ("prefill_speedup", "e2e_speedup", "decode_speedup", "throughput_gain"),
        "tokens",
        "visual tokens kept (%)",
        "claimed speedup (x)",
    ),
    SettingKind(
        "kv-speedup",
        "KV cache kept vs speedup on {model}",
        ("decode_speedup", "e2e_speedup", "throughput_gain"),
        "kv",
        "KV cache kept (%)",
        "claimed speedup (x)",
    ),
)

# ------------------------------------------------------------------------------------------------ parsing settings
_ALIASES = {
    "llava-v1.5": "llava-1.5",
    "llava-v1.6": "llava-next",
    "llava-1.6": "llava-next",
    "llava-ov": "llava-onevision",
    "llava-next-video": "llava-next-video",
}
_MULTI = re.compile(r"[,/;]|\band\b|\bvarious\b|\bmultiple\b|\bfamil|\bLVLMs\b|\bMLLMs\b|\bmodels\b", re.I)


def model_key(model: str | None) -> str | None:
    """A base model's comparable key ("LLaVA-v1.5-7B", "LLaVA-1.5-7B + TRIM" -> "llava-1.5-7b"); None when the text
    names no single model ("various LVLMs", "LLaVA-1.5-7B/13B")."""
    if not model:
        return None
    text = re.sub(r"\([^)]*\)", " ", model).split("+", 1)[0].strip()
    if not text or _MULTI.search(text):
        return None
    key = re.sub(r"[\s_]+", "-", text.lower()).strip("-")
    for alias, canonical in _ALIASES.items():
        if key == alias or key.startswith(alias + "-"):
            key = canonical + key[len(alias) :]
            break
    return key if re.fullmatch(r"[a-z][a-z0-9.\-]*", key) else None


_NUMBER = r"(\d+(?:\.\d+)?)"
_KV_SHARE = re.compile(_NUMBER + r"\s*% of (?:the )?(?:visual )?KV[- ]cache", re.I)
_TOKEN_SHARE = re.compile(
    _NUMBER + r"\s*% (?:of )?(?:the )?(?:visual|vision|image|video) tokens?(?: (pruned|removed|dropped))?", re.I
)
_TOKEN_FRACTION = re.compile(r"(\d[\d,]*) of (\d[\d,]*) (?:visual|vision|image|video) tokens", re.I)
_TOKEN_PRUNING = re.compile(_NUMBER + r"\s*% (?:average )?(?:visual )?token (?:pruning|reduction)", re.I)


def budget_share(text: str | None, kind: str) -> float | None:
    """The share kept (%) that a claim's budget text states, for ``kind`` "tokens" or "kv"; None when it states
    none of the recognised forms."""
    if not text:
        return None
    if kind == "kv":
        m = _KV_SHARE.search(text)
        return float(m.group(1)) if m else None
    m = _TOKEN_FRACTION.search(text)
    if m:
        kept, total = (float(g.replace(",", "")) for g in m.groups())
        return 100.0 * kept / total if total else None
    m = _TOKEN_SHARE.search(text)
    if m:
        share = float(m.group(1))
        return 100.0 - share if m.group(2) else share
    m = _TOKEN_PRUNING.search(text)
    if m:
        return 100.0 - float(m.group(1))
    return None


def _own_token_share(paper: Paper, key: str | None) -> float | None:
    """The share of visual tokens the paper says it keeps (or prunes) on the same model, in %."""
    for claim in paper.claims:
        if claim.unit == "%" and model_key(claim.setting.model) in (key, None):
            if claim.metric == "visual_tokens_retained":
                return float(claim.value)
            if claim.metric == "visual_tokens_pruned":
                return 100.0 - float(claim.value)
    return None


# ------------------------------------------------------------------------------------------------ grouping
@dataclass
class Row:
    """One claim in a results table."""

    paper: str
    claim: Claim
    budget: float  # % kept
    flag: str = ""  # why this row's percentage is not comparable, when it is not


@dataclass
class Setting:
    """A results table: the claims measured in one comparable setting."""

    kind: SettingKind
    model: str  # the key
    model_name: str  # as most papers spell it
    rows: list[Row] = field(default_factory=list)

    @property
    def id(self) -> str:
        """The table's anchor id."""
        return f"{self.kind.id}-{re.sub(r'[^a-z0-9]+', '-', self.model).strip('-')}"

    @property
    def title(self) -> str:
        """The table's title."""
        return self.kind.title.format(model=self.model_name)

    @property
    def papers(self) -> int:
        """How many papers the table compares."""
        return len({r.paper for r in self.rows})


def _benchmark_key(text: str | None) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", (text or "").lower()))


def comparable_settings(papers: Mapping[str, Paper], ordered_ids: list[str]) -> list[Setting]:
    """Every setting shared by at least :data:`MIN_PAPERS` papers, most papers first; rows by budget."""
    groups: dict[tuple[str, str], Setting] = {}
    spellings: dict[str, Counter] = defaultdict(Counter)
    for pid in ordered_ids:
        paper = papers[pid]
        for claim in paper.claims:
            key = model_key(claim.setting.model)
            if key is None:
                continue
            spellings[key][re.sub(r"\([^)]*\)", " ", claim.setting.model).split("+", 1)[0].strip()] += 1
            for kind in SETTINGS:
                if claim.metric not in kind.metrics:
                    continue
                budget = budget_share(claim.setting.budget, kind.budget)
                if budget is None and kind.budget == "tokens":
                    budget = _own_token_share(paper, key)
                if budget is None or not 0 < budget <= 100:
                    continue
                setting = groups.setdefault((kind.id, key), Setting(kind, key, key))
                setting.rows.append(Row(pid, claim, budget))
    out = []
    for setting in groups.values():
        if setting.papers < MIN_PAPERS:
            continue
        counts = spellings[setting.model]  # the most common spelling; on a tie the shorter, then the first by name
        setting.model_name = min(counts, key=lambda name: (-counts[name], len(name), name))
        setting.rows.sort(key=lambda r: (r.budget, r.paper))
        out.append(setting)
    _flag_baselines(papers, out)
    order = [kind.id for kind in SETTINGS]
    return sorted(out, key=lambda s: (-s.papers, order.index(s.kind.id), s.model))


def baseline_scores(papers: Mapping[str, Paper]) -> dict[tuple[str, str], dict[str, set[float]]]:
    """(model key, benchmark) -> paper id -> the baseline scores it reports there."""
    found: dict[tuple[str, str], dict[str, set[float]]] = defaultdict(lambda: defaultdict(set))
    for pid, paper in papers.items():
        for claim in paper.claims:
            key = model_key(claim.setting.model)
            if key is not None and claim.setting.baseline_score is not None:
                found[(key, _benchmark_key(claim.setting.benchmark))][pid].add(float(claim.setting.baseline_score))
    return found


def _flag_baselines(papers: Mapping[str, Paper], settings: list[Setting]) -> None:
    scores = baseline_scores(papers)
    for setting in settings:
        for row in setting.rows:
            score = row.claim.setting.baseline_score
            if score is None:
                continue
            others = {
                s
                for pid, values in scores[(setting.model, _benchmark_key(row.claim.setting.benchmark))].items()
                if pid != row.paper
                for s in values
                if s != float(score)
            }
            if others:
                row.flag = (
                    f"baseline score {score:g} here; other papers report "
                    + ", ".join(f"{s:g}" for s in sorted(others))
                    + " for the same model and benchmark"
                )
