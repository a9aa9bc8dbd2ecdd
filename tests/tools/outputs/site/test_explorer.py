"""The explorer's data and the catalogue's exports: every author and the summary are searchable, technique groups
reach the page, and the published CSV / JSON / BibTeX files hold every paper (the browser test checks that the
explorer's own export of every paper is these files byte for byte)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import bibtexparser

from tests.tools._entries import entry
from tests.tools.outputs._fixture_catalogue import HOSTILE_TITLE, UNDERSCORE_URL
from tools.catalogue.schema import Paper
from tools.catalogue.taxonomy import load_taxonomy
from tools.outputs.site.explorer import EXPORT_COLUMNS, venue_status


def _data(built_site) -> dict:
    return json.loads((built_site.site / "data" / "papers.json").read_text(encoding="utf-8"))


def test_records_carry_every_author_the_summary_and_the_links(built_site):
    records = {r["id"]: r for r in _data(built_site)["papers"]}
    keyframe = records["keyframe-selector-2025"]
    assert keyframe["authors"] == ["Jürgen Müller", "Łukasz Łukasiewicz", "Nguyễn Văn An"]  # all, not three
    assert records["visionzip-2025"]["summary"].startswith("Keeps a few dominant")
    assert records["fastv-2024"]["link"] == "https://arxiv.org/abs/2403.06764"
    assert records["fast-variant-2025"]["link"] == UNDERSCORE_URL  # no arXiv id: the paper's own page
    assert records["fastv-2024"]["code_urls"] == ["https://github.com/pkunlp-icler/FastV"]
    assert records["fastv-2024"]["key"] == "chen2024imageb" and records["hostile-2025"]["title"] == HOSTILE_TITLE
    assert "\u202e" not in json.dumps(records["bidi-2025"], ensure_ascii=False)


def test_technique_groups_and_export_columns_reach_the_explorer(built_site):
    data = _data(built_site)
    groups = data["vocab"]["groups"]
    tax = load_taxonomy()
    assert set(groups) == {g.id for g in tax.technique_groups}
    assert groups["kv_cache_compression"]["name"] == "KV-cache compression"
    assert len(groups["kv_cache_compression"]["techniques"]) == 7
    assert [tuple(c) for c in data["columns"]] == EXPORT_COLUMNS


def test_the_whole_catalogue_is_published_as_csv_json_and_bibtex(built_site):
    data = built_site.site / "data"
    rows = list(csv.reader(io.StringIO((data / "catalogue.csv").read_text(encoding="utf-8"), newline="")))
    assert rows[0] == [name for name, _ in EXPORT_COLUMNS]
    assert sorted(r[0] for r in rows[1:]) == sorted(built_site.papers)
    hostile = next(r for r in rows if r[0] == "hostile-2025")
    assert hostile[2] == HOSTILE_TITLE and hostile[4] == "Robert'); DROP <i>Tables</i>; A & B {C}"
    records = json.loads((data / "catalogue.json").read_text(encoding="utf-8"))
    assert [r["id"] for r in records] == [r[0] for r in rows[1:]]  # same papers, same order
    assert records[0].keys() == {name for name, _ in EXPORT_COLUMNS}
    entries = json.loads((data / "bibtex.json").read_text(encoding="utf-8"))
    assert set(entries) == set(built_site.papers)
    for pid, bib_entry in entries.items():  # the entry of each paper's own .bib file
        assert bib_entry == (built_site.site / "bib" / f"{pid}.bib").read_text(encoding="utf-8")
    library = bibtexparser.parse_string("\n".join(entries.values()))
    assert library.failed_blocks == [] and len(library.entries) == len(built_site.papers)
    home = (built_site.site / "index.html").read_text(encoding="utf-8")
    for target in ("atlas.bib", "data/catalogue.csv", "data/catalogue.json"):
        assert f'href="{target}"' in home


def test_the_venue_status_column_says_checked_searched_or_not_checked():
    tax = load_taxonomy()

    def paper(**fields):
        return Paper.model_validate(entry(**fields), context={"taxonomy": tax})

    venue_page = {"title": "https://arxiv.org/abs/2403.06764", "venue": "https://www.ecva.net/papers/eccv_2024/x.php"}
    assert venue_status(paper(venue_checked=True, provenance=venue_page)) == "checked"
    assert venue_status(paper(venue="arXiv", venue_searched=dt.date(2026, 12, 5))) == "searched 2026-12-05"
    assert venue_status(paper(venue="arXiv")) == "not checked"
