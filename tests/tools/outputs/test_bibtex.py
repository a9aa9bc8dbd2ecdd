"""BibTeX: escaping, keys and collisions, entry types and fields, round trip, and `bib --compare`."""

from __future__ import annotations

import unicodedata

import bibtexparser
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.tools.outputs._fixture_catalogue import HOSTILE_TITLE, UNDERSCORE_DOI, UNDERSCORE_URL, fixture_papers
from tools import cli
from tools.catalogue.paths import ROOT
from tools.catalogue.taxonomy import load_taxonomy
from tools.outputs.bibtex import (
    bib_author,
    catalogue_keys,
    check_bib,
    latex_decode,
    latex_escape,
    latex_title,
    render_bib,
    render_one,
    verbatim,
)
from tools.outputs.text import BIDI_CONTROLS, plain


@pytest.fixture(scope="module")
def papers():
    return fixture_papers()


@pytest.fixture(scope="module")
def parsed(papers):
    text = render_bib(papers, load_taxonomy())
    return text, bibtexparser.parse_string(text)


def test_latex_specials_are_escaped():
    assert latex_escape("50% & $5 #1 a_b {x} ~ ^ \\") == (
        r"50\% \& \$5 \#1 a\_b \{x\} \textasciitilde{} \textasciicircum{} \textbackslash{}"
    )
    assert latex_escape("<script>") == r"\textless{}script\textgreater{}"


def test_non_ascii_names_are_escaped():
    assert latex_escape("Müller") == r"M{\"u}ller"
    assert latex_escape("Łukasz Łukasiewicz") == r"{\L}ukasz {\L}ukasiewicz"
    assert latex_escape("Nguyễn") == r"Nguy{\~\^e}n"
    assert latex_escape("Šimánek") == r"{\v{S}}im{\'a}nek"
    assert latex_escape("Çelik Øster İnan") == r"{\c{C}}elik {\O}ster {\.I}nan"


def test_acronyms_and_camel_case_words_are_protected():
    assert latex_title("FastV makes LLaVA-1.5 faster with a KV-cache") == (
        "{FastV} makes {LLaVA}-1.5 faster with a {KV}-cache"
    )
    assert latex_title("Vision Transformers") == "Vision Transformers"


def test_two_hyphens_in_text_do_not_become_a_dash():
    assert latex_escape("a--b") == "a-{}-b"
    assert latex_decode(latex_escape("a--b – c")) == "a--b – c"


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.characters(
            blacklist_categories=("Cs", "Cc", "Cf", "Co", "Cn", "Zl", "Zp", "Zs"), whitelist_characters=" "
        ),
        max_size=60,
    )
)
def test_escape_round_trips(text):
    text = " ".join(unicodedata.normalize("NFC", text).split())  # the escaper normalises to NFC
    assert latex_decode(latex_escape(text)) == text
    assert latex_decode(latex_title(text)) == text
    escaped = latex_title(text)
    depth = 0
    for i, ch in enumerate(escaped):  # braces stay balanced (escaped ones do not count)
        if ch in "{}" and (i == 0 or escaped[i - 1] != "\\"):
            depth += 1 if ch == "{" else -1
            assert depth >= 0
    assert depth == 0


def test_authors_last_first():
    assert bib_author("Liang Chen") == "Chen, Liang"
    assert bib_author("Jean-Luc de la Fontaine") == "de la Fontaine, Jean-Luc"
    assert bib_author("Plato") == "{Plato}"
    assert bib_author("Chen, Liang") == "Chen, Liang"


def test_keys_are_scholar_style_with_deterministic_suffixes(papers):
    keys = catalogue_keys(papers)
    # FastV and chen-collision-2024 share chen2024image; the suffix goes by paper id, whatever the input order.
    assert keys["chen-collision-2024"] == "chen2024image"
    assert keys["fastv-2024"] == "chen2024imageb"
    assert keys["snapkv-2024"] == "li2024snapkv"
    assert keys["keyframe-selector-2025"] == "muller2025muller"
    assert catalogue_keys(list(reversed(list(papers.values())))) == keys
    assert len(set(keys.values())) == len(keys)


def test_whole_bib_parses_back_one_entry_per_paper(papers, parsed):
    text, library = parsed
    assert library.failed_blocks == []
    keys = catalogue_keys(papers)
    assert sorted(e.key for e in library.entries) == sorted(keys.values())
    by_key = {e.key: e for e in library.entries}
    for pid, paper in papers.items():
        entry = by_key[keys[pid]]
        assert latex_decode(entry.fields_dict["title"].value) == " ".join(plain(paper.title).split())
        assert entry.fields_dict["year"].value == str(paper.year)


def test_entry_types_and_fields(papers, parsed):
    _, library = parsed
    keys = catalogue_keys(papers)
    by_key = {e.key: e for e in library.entries}
    fastv = by_key[keys["fastv-2024"]]
    assert fastv.entry_type == "inproceedings"
    assert fastv.fields_dict["booktitle"].value == "European Conference on Computer Vision"
    assert fastv.fields_dict["eprint"].value == "2403.06764"
    assert fastv.fields_dict["archivePrefix"].value == "arXiv"
    assert fastv.fields_dict["author"].value == "Chen, Liang and Zhao, Haozhe and others"  # truncated list
    preprint = by_key[keys["keyframe-selector-2025"]]
    assert preprint.entry_type == "article"
    assert preprint.fields_dict["journal"].value == "arXiv preprint arXiv:2502.01234"
    assert preprint.fields_dict["author"].value == (
        r"M{\"u}ller, J{\"u}rgen and {\L}ukasiewicz, {\L}ukasz and An, Nguy{\~\^e}n V{\u{a}}n"
    )
    order = ["author", "title", "booktitle", "journal", "year", "doi", "eprint", "archivePrefix", "primaryClass", "url"]
    for entry in library.entries:
        names = [f.key for f in entry.fields]
        assert names == sorted(names, key=order.index)


def test_url_and_doi_are_verbatim(papers, parsed):
    """biblatex and the url package read url and doi as they are: an escaped underscore (\\_) would end up in the
    link. Only what cannot stand in a braced value is percent-encoded."""
    text, library = parsed
    keys = catalogue_keys(papers)
    entry = {e.key: e for e in library.entries}[keys["fast-variant-2025"]]
    assert entry.fields_dict["url"].value == UNDERSCORE_URL and entry.fields_dict["doi"].value == UNDERSCORE_DOI
    assert "\\_" not in "".join(line for line in text.splitlines() if line.lstrip().startswith(("url", "doi")))
    assert verbatim("https://x.org/a_b%20c?d={e}\\f g") == "https://x.org/a_b%20c?d=%7Be%7D%5Cf%20g"
    assert verbatim("10.1000/a_b#c~d") == "10.1000/a_b#c~d"


def test_bidi_controls_never_reach_the_bib(papers, parsed):
    text, _ = parsed
    assert not any(ch in text for ch in BIDI_CONTROLS)
    assert "Righttoleft overrides stay out of the page" in text


def test_hostile_title_is_inert_in_bibtex(papers):
    keys = catalogue_keys(papers)
    text = render_one(papers["hostile-2025"], keys["hostile-2025"], load_taxonomy())
    library = bibtexparser.parse_string(text)
    assert library.failed_blocks == [] and len(library.entries) == 1
    title = library.entries[0].fields_dict["title"].value
    assert "{{" not in title.replace(r"\{", "") and "<" not in title
    assert latex_decode(title) == HOSTILE_TITLE
    long = render_one(papers["long-title-2025"], keys["long-title-2025"], load_taxonomy())
    assert len(bibtexparser.parse_string(long).entries) == 1


def test_check_reports_what_the_catalogue_has_and_lacks(papers):
    user_bib = r"""
@article{mine1, title = {An Image is Worth 1/2 Tokens After Layer 2: Plug-and-Play Inference Acceleration for
  Large Vision-Language Models}, year = {2024}}
@misc{mine2, title = {Something else}, eprint = {2404.14469v2}}
@inproceedings{mine3, title = {M{\"u}ller and {\L}ukasiewicz: Selecting {Keyframes} for {Video-LLMs}}}
@article{mine4, title = {A paper the catalogue lacks}, year = {2020}}
"""
    result = check_bib(user_bib, papers)
    assert result.found == {"mine1": "fastv-2024", "mine2": "snapkv-2024", "mine3": "keyframe-selector-2025"}
    assert result.how == {"mine1": "title", "mine2": "arxiv", "mine3": "title"}
    assert result.missing == [("mine4", "A paper the catalogue lacks")]
    assert result.failed_blocks == 0


def test_bib_check_cli(tmp_path, capsys):
    path = tmp_path / "refs.bib"
    path.write_text(
        "@article{x, title={Surely Not In The Catalogue At All}}\n@article{y, title={X}, eprint={2403.06764}}\n",
        encoding="utf-8",
    )
    assert cli.main(["bib", "--compare", str(path)]) == 0
    out = capsys.readouterr().out
    assert "2 entries; the catalogue has 1, lacks 1" in out
    assert "have   y -> papers/fastv-2024.yaml (matched by arxiv)" in out
    assert cli.main(["bib", "--compare", str(tmp_path / "missing.bib")]) == 2


def test_atlas_bib_is_fresh_and_complete():
    assert cli.main(["bib", "--check"]) == 0, "atlas.bib is stale: run `python -m tools bib`"
    from tools.catalogue.validate import load_catalogue

    library = bibtexparser.parse_file(str(ROOT / "atlas.bib"))
    assert library.failed_blocks == []
    assert len(library.entries) == len(load_catalogue())
