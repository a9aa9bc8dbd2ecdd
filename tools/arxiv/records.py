"""Verification records: what a person read on a paper's own pages, one record per paper (the format is documented in
CONTRIBUTING.md, "Verification records"), and how ``python -m tools add --from FILE`` turns them into catalogue changes.

A record with ``decision: include`` creates an entry (its id chosen as ``add <arXiv id>`` chooses it) or updates the
entry it names (``id``) or shares an arXiv id with. An update replaces the facts the record gives and keeps the rest
(reference implementations, citation key, ``distinct_from``, frontiers, earlier disagreements); each title, author
list, venue, code link, arXiv id or year it changes is kept as a disagreement (the retired value and where it was
read, or the list the entry came from when it had no source). ``last_verified`` becomes the record's ``checked``.
A record with ``decision: exclude`` goes to the rejected list (tools/catalogue/rejected.py), and the entry it names
is removed.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tools.arxiv.entries import choose_id
from tools.arxiv.record_format import (
    RETIRED_FIELDS,
    Located,
    VerificationRecord,
    given_facts,
    record_provenance,
    set_claim_source,
    shown_value,
)
from tools.arxiv.source import abs_url
from tools.catalogue import provenance as sources
from tools.catalogue.entries import to_yaml_data
from tools.catalogue.problems import Problem, ProblemError
from tools.catalogue.schema import PREPRINT, PROVENANCE_FIELDS, Paper
from tools.catalogue.yamlio import dump_entry


@dataclass
class Planned:
    """What one record does to the catalogue."""

    located: Located
    action: Literal["create", "update", "unchanged", "reject"]
    paper_id: str | None = None
    data: dict[str, Any] | None = None  # the entry after the change (create, update)
    changed: list[str] = field(default_factory=list)  # fields whose value changed (update)
    filled: list[str] = field(default_factory=list)  # fields that were empty (update)
    retired: int = 0  # retired values recorded as disagreements
    unattributed: list[str] = field(default_factory=list)  # retired values with no source to name
    removes: str | None = None  # the id of the entry an exclusion removes


def new_entry(rec: VerificationRecord, taken: set[str]) -> dict[str, Any]:
    """The data of a new entry for an include record (validate it with tools.catalogue.entries.build_paper)."""
    given = given_facts(rec)
    prov, read_via = record_provenance(rec)
    claims = given.pop("claims", [])
    for claim in claims:
        set_claim_source(claim, prov, rec.arxiv, read_via)
    year = rec.year if rec.year is not None else (rec.first_version.year if rec.first_version else None)
    data: dict[str, Any] = {
        "id": choose_id(rec.title or "", year or 0, taken) if rec.title and year else rec.id,
        "authors": [],
        "authors_status": "unknown",
        "venue": PREPRINT,
        "training": None,
        **given,
        "claims": claims,
        "year": year,
        "provenance": {k: prov[k] for k in PROVENANCE_FIELDS if k in prov},
        "read_via": read_via,
        "listed_in": list(dict.fromkeys(rec.listed_in or [])),
        "last_verified": rec.checked,
    }
    if rec.arxiv:
        data["paper_url"] = abs_url(rec.arxiv)
    elif sources.URL.match(prov.get("title", "")):
        data["paper_url"] = prov["title"]
    extra = set(prov) - set(PROVENANCE_FIELDS)
    if extra:
        data["provenance"].update({k: prov[k] for k in extra})  # the schema names the unknown field
    return {k: v for k, v in data.items() if v is not None or k == "training"}


def updated_entry(old: Paper, rec: VerificationRecord) -> tuple[dict[str, Any], list[str], list[str], int, list[str]]:
    """(the entry after the record, fields changed, fields filled, retired values recorded, retired values without a
    source to name). A placement counts as changed when its cells or techniques do; a re-read placement that keeps
    them is updated (method, review flag, note) without counting."""
    data = to_yaml_data(old)
    given = given_facts(rec)
    prov_new, read_via_new = record_provenance(rec)
    claims = given.get("claims")
    for claim in claims or []:
        set_claim_source(claim, prov_new, rec.arxiv, read_via_new)
    prov = dict(old.provenance)
    changed, filled, unattributed = [], [], []
    disagreements = [d.model_dump(mode="python") for d in old.disagreements]
    retired = 0
    for name, value in given.items():
        current = data.get(name)
        if name == "venue_checked":
            data[name] = value or (old.venue_checked and rec.venue == old.venue)
            continue
        if _same(current, value):
            if name in prov_new:
                prov[name] = prov_new[name]
            continue
        if current in (None, [], ""):
            filled.append(name)
        elif name != "placement" or not _same(_cells_and_techniques(current), _cells_and_techniques(value)):
            changed.append(name)
        if name in RETIRED_FIELDS and current not in (None, [], ""):
            old_source = prov.get(name) or next((x for x in old.listed_in if sources.is_address(x)), None)
            new_source = prov_new.get(name)
            if old_source and old_source == new_source:  # the page changed (a new version): the older reading
                old_source = f"{old_source} (read before {rec.checked.isoformat()})"
            old_text, new_text = shown_value(name, current), shown_value(name, value)
            if old_source and new_source and old_text != new_text:
                entry = {
                    "field": name,
                    "values": {old_source: old_text, new_source: new_text},
                    "kept": new_text,
                    "why": f"read on the paper's own page in the verification of {rec.checked.isoformat()}",
                }
                if entry not in disagreements:
                    disagreements.append(entry)
                    retired += 1
            elif old_text != new_text:
                unattributed.append(f"{name}: {old_text!r}")
        data[name] = value
        if name in prov_new:
            prov[name] = prov_new[name]
        else:
            prov.pop(name, None)  # the old source spoke about the old value
    for name in ("paper_url",):
        if name in prov_new and name not in prov:
            prov[name] = prov_new[name]
    if rec.arxiv and not old.paper_url:
        data["paper_url"] = abs_url(rec.arxiv)
    data["provenance"] = {k: prov[k] for k in [*PROVENANCE_FIELDS, *prov] if k in prov}
    cited = set(data["provenance"].values()) | {c["source"] for c in data.get("claims") or []}
    read_via = {**old.read_via, **read_via_new}
    data["read_via"] = {k: v for k, v in read_via.items() if k in cited}
    data["listed_in"] = list(dict.fromkeys([*old.listed_in, *(rec.listed_in or [])]))
    data["disagreements"] = disagreements
    if data.get("venue") != PREPRINT:
        data.pop("venue_searched", None)  # a search without result says nothing once a venue is found
    data["last_verified"] = rec.checked
    return data, changed, filled, retired, unattributed


def _cells_and_techniques(placement: dict[str, Any]) -> tuple[list[str], list[str]]:
    return sorted(placement.get("cells", [])), sorted(placement.get("techniques", []))


def _same(a: Any, b: Any) -> bool:
    """Equal once keys holding null are dropped (an entry does not write them; a record may)."""
    return json.dumps(_without_nulls(a), sort_keys=True, default=str) == json.dumps(
        _without_nulls(b), sort_keys=True, default=str
    )


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


# ============================================================================================ a batch of records
@dataclass
class Plan:
    """Everything a set of records would do: the steps, the files to write and the problems found."""

    steps: list[Planned] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)  # paper id -> the file's new text (create, update)

    def count(self, action: str) -> int:
        """How many steps take ``action`` (create, update, unchanged, reject)."""
        return sum(1 for s in self.steps if s.action == action)


def _missing_for_a_new_paper(rec: VerificationRecord) -> list[str]:
    """The facts a record must give to create an entry, of those it leaves empty."""
    needed = (
        ("title", rec.title),
        ("placement", rec.placement),
        ("modality", rec.modality),
        ("year", rec.year or rec.first_version),
    )
    return [name for name, value in needed if not value]


def plan_records(records: list[Located], papers: dict[str, Paper], taken: set[str], rejected, taxonomy) -> Plan:
    """What the records do to the catalogue (``papers``: the valid entries by id; ``taken``: every id in use;
    ``rejected``: a tools.catalogue.rejected.RejectedList). Nothing is written; every problem is collected."""
    from tools.catalogue.entries import build_paper

    plan = Plan()
    by_arxiv = {p.arxiv: pid for pid, p in papers.items() if p.arxiv}
    seen: dict[tuple[str, str], str] = {}
    built: dict[str, Paper] = {}
    where: dict[str, Located] = {}
    taken = set(taken)
    for loc in records:
        rec = loc.record
        keys = [("arxiv", rec.arxiv)] * bool(rec.arxiv) + [("id", rec.id)] * bool(rec.id)
        earlier = next((seen[k] for k in keys if k in seen), None)
        if earlier:
            plan.problems.append(loc.problem(keys[0][0], f"the same paper as the record at {earlier}"))
            continue
        seen.update({k: f"{loc.file}:{loc.line}" for k in keys})
        target = None
        if rec.id and rec.id in papers:
            target = rec.id
        elif rec.id and rec.decision == "include":
            plan.problems.append(loc.problem("id", f"no entry papers/{rec.id}.yaml (leave id out for a new paper)"))
            continue
        if rec.arxiv and rec.arxiv in by_arxiv:
            if target and by_arxiv[rec.arxiv] != target:
                plan.problems.append(
                    loc.problem(
                        "arxiv",
                        f"arXiv {rec.arxiv} is catalogued as papers/{by_arxiv[rec.arxiv]}.yaml, not as {target}",
                    )
                )
                continue
            target = by_arxiv[rec.arxiv]
        if rec.decision == "exclude":
            if not rec.exclude_reason:
                plan.problems.append(loc.problem("exclude_reason", "required with decision: exclude"))
            elif not (rec.arxiv or rec.id):
                plan.problems.append(loc.problem("arxiv", "name the paper: give arxiv or id"))
            else:
                title = rec.title or (papers[target].title if target else "")
                plan.steps.append(Planned(loc, "reject", paper_id=target, removes=target, data={"title": title}))
            continue
        if rec.exclude_reason:
            plan.problems.append(loc.problem("exclude_reason", "only with decision: exclude"))
            continue
        refusal = rejected.refusal(rec.arxiv, target)
        if refusal:
            plan.problems.append(loc.problem("arxiv" if rec.arxiv else "id", refusal))
            continue
        if target:
            data, changed, filled, retired, unattributed = updated_entry(papers[target], rec)
            step = Planned(loc, "update", target, data, changed, filled, retired, unattributed)
        else:
            missing = _missing_for_a_new_paper(rec)
            if missing:
                plan.problems.append(loc.problem(missing[0], f"a new paper needs {', '.join(missing)}"))
                continue
            data = new_entry(rec, taken)
            step = Planned(loc, "create", data["id"], data)
        try:
            paper = build_paper(data, taxonomy, label=loc.file, line=loc.line)
        except ProblemError as exc:
            plan.problems.extend(exc.problems)
            continue
        text = dump_entry(to_yaml_data(paper))
        if step.action == "update" and text == dump_entry(to_yaml_data(papers[target])):
            step.action = "unchanged"
        else:
            plan.texts[paper.id] = text
        taken.add(paper.id)
        built[paper.id], where[paper.id] = paper, loc
        plan.steps.append(step)
    problems, distinct = _duplicates(papers, built, where, {s.removes for s in plan.steps if s.removes})
    plan.problems.extend(problems)
    _name_distinct_papers(plan, built, where, distinct, taxonomy)
    return plan


def _name_distinct_papers(plan: Plan, built, where, distinct: dict[str, set[str]], taxonomy) -> None:
    """Write into each entry the ids its record named as different papers (so validation stays quiet later)."""
    from tools.catalogue.entries import build_paper

    for pid, others in distinct.items():
        data = to_yaml_data(built[pid])
        data["distinct_from"] = sorted({*data.get("distinct_from", []), *others})
        plan.texts[pid] = dump_entry(to_yaml_data(build_paper(data, taxonomy, label=where[pid].file)))


def _duplicates(
    papers: dict[str, Paper], built: dict[str, Paper], where: dict[str, Located], removed: set[str]
) -> tuple[list[Problem], dict[str, set[str]]]:
    """The new and updated entries must not describe a paper the catalogue (as it will be) has under another id
    (problems), unless their record lists the other one (by id or arXiv id) in ``distinct_from``: then the ids the
    entry must name in its own ``distinct_from`` (by entry id)."""
    from tools.catalogue.same_paper import Described, duplicate_pairs

    final = {pid: p for pid, p in papers.items() if pid not in removed}
    final.update(built)
    changed = set(built)
    out: list[Problem] = []
    distinct: dict[str, set[str]] = {}
    for match in duplicate_pairs((Described.of(p) for p in final.values()), involving=changed):
        a, b = (match.a, match.b) if match.a in changed else (match.b, match.a)
        if b in final[a].distinct_from or a in final[b].distinct_from:
            continue
        said = set(where[a].record.distinct_from or [])
        if b in said or (final[b].arxiv and final[b].arxiv in said):
            distinct.setdefault(a, set()).add(b)
            continue
        loc = where[a]
        out.append(
            loc.problem(
                "title",
                f"the same paper as papers/{b}.yaml ({match.why}): give that entry's id, "
                "or list it in distinct_from if they are different papers",
            )
        )
    return out, distinct


def apply_plan(plan: Plan, papers_dir: Path, files: dict[str, Path], rejected) -> None:
    """Write the plan: every new text is staged beside its file first, then the rejected list is written, then the
    staged files are renamed into place and removed entries deleted (each step atomic per file)."""
    from tools.catalogue.rejected import Rejection

    staged: list[tuple[str, Path]] = []
    try:
        for pid, text in plan.texts.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{pid}.", suffix=".staged", dir=papers_dir)
            staged.append((tmp, Path(papers_dir) / f"{pid}.yaml"))
            try:
                handle = os.fdopen(fd, "w", encoding="utf-8", newline="\n")
            except BaseException:
                os.close(fd)
                raise
            with handle:
                handle.write(text)
            os.chmod(tmp, 0o644)
        rejections = [s for s in plan.steps if s.action == "reject"]
        for step in rejections:
            rec = step.located.record
            rejected.add(
                Rejection(
                    arxiv=rec.arxiv,
                    id=step.removes or rec.id,
                    title=step.data["title"],
                    date=rec.checked,
                    reason=rec.exclude_reason,
                )
            )
        if rejections:
            rejected.write()
    except BaseException:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        raise
    for tmp, final in staged:
        os.replace(tmp, final)
    for step in plan.steps:
        if step.removes and step.removes in files:
            files[step.removes].unlink(missing_ok=True)
