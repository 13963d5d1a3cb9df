"""The repository explains what it cites and points nowhere outside itself.

Code, configs, scripts, tests and docs cite reference quirks as `ws-crl gotcha N` or
`md-crl gotcha N` (lists: `md-crl gotchas 9, 10, 11`); every id cited must be a row of the
quirk index at the end of docs/reproducing.md, and so must every id in that page's tables of
reproduced quirks. The notes these ids once came from are not part of the repository, so no
file may point at them.
"""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCANNED = ("wscrl_jax", "configs", "scripts", "tests", "docs", "README.md")
TEXT_SUFFIXES = {".py", ".md", ".c", ".sh", ".txt", ".toml", ".cfg", ".yaml", ".yml", ""}
REPRODUCING = ROOT / "docs" / "reproducing.md"
THIS_FILE = pathlib.Path(__file__).resolve()

# `ws-crl gotcha 5`, `md-crl gotchas 9, 10 and 27`, `ws-crl gotchas 16-19`; the prefix is
# optional here so that a bare citation is found too (and reported).
CITATION = re.compile(
    r"(?:\b(ws-crl|md-crl)\s+)?\bgotchas?\s+(\d+(?:\s*(?:,\s*|\band\s+|-)\d+)*)", re.IGNORECASE)
OUTSIDE = re.compile(r"\.\./shared|/work/shared|\b(?:ws|md)-crl\.md\b")


def _files():
    for name in SCANNED:
        path = ROOT / name
        for f in sorted([path] if path.is_file() else path.rglob("*")):
            if f.is_file() and f.suffix in TEXT_SUFFIXES and "__pycache__" not in f.parts \
                    and f.resolve() != THIS_FILE:
                yield f


def _ids(listing: str):
    """'9, 10 and 27' -> [9, 10, 27]; '16-19' -> [16, 17, 18, 19]."""
    ids = []
    for part in re.split(r"\s*,\s*|\s+and\s+", listing.strip()):
        low, _, high = part.partition("-")
        ids.extend(range(int(low), int(high or low) + 1))
    return ids


def _citations():
    """[(file, line, prefix or None, [ids])] of every citation in the scanned files."""
    found = []
    for f in _files():
        text = f.read_text(errors="replace")
        for m in CITATION.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            prefix = m.group(1).lower() if m.group(1) else None
            found.append((f.relative_to(ROOT), line, prefix, _ids(m.group(2))))
    return found


def _index():
    """{"ws-crl": {ids}, "md-crl": {ids}}: the rows of the quirk index's two tables."""
    text = REPRODUCING.read_text()
    assert "\n## Quirk index\n" in text, "docs/reproducing.md has no '## Quirk index' section"
    index_text = text.split("\n## Quirk index\n", 1)[1]
    rows = {}
    for prefix in ("ws-crl", "md-crl"):
        head = f"\n### {prefix} quirks\n"
        assert head in index_text, f"the quirk index has no '### {prefix} quirks' table"
        table = index_text.split(head, 1)[1].split("\n### ", 1)[0]
        rows[prefix] = {int(m.group(1)) for m in re.finditer(r"^\| (\d+) \|", table, re.M)}
        assert rows[prefix], f"the {prefix} table of the quirk index has no rows"
    return rows


def test_citation_pattern_reads_lists_and_ranges():
    text = "x (md-crl gotchas 9, 10 and 27) y ws-crl gotchas 16-18; gotcha 4"
    got = [(m.group(1), _ids(m.group(2))) for m in CITATION.finditer(text)]
    assert got == [("md-crl", [9, 10, 27]), ("ws-crl", [16, 17, 18]), (None, [4])]


def test_every_citation_names_its_reference():
    bare = [f"{f}:{line}" for f, line, prefix, _ in _citations() if prefix is None]
    assert not bare, ("cite a quirk as 'ws-crl gotcha N' or 'md-crl gotcha N', not bare: "
                      + ", ".join(bare))


def test_every_cited_id_is_in_the_quirk_index():
    index = _index()
    citations = _citations()
    assert any(prefix == "ws-crl" for _, _, prefix, _ in citations)
    assert any(prefix == "md-crl" for _, _, prefix, _ in citations)
    missing = sorted({f"{prefix} gotcha {i} ({f}:{line})"
                      for f, line, prefix, ids in citations if prefix
                      for i in ids if i not in index[prefix]})
    assert not missing, "not in docs/reproducing.md's quirk index: " + "; ".join(missing)


def test_reproduced_quirk_tables_cite_indexed_ids():
    """The tables of reproduced quirks (WS-CRL's before '## MD-CRL', MD-CRL's after) end their
    first cell with the quirk's id in parentheses, e.g. `(... , 13)`."""
    index = _index()
    text = REPRODUCING.read_text().split("\n## Quirk index\n", 1)[0]
    ws_part, md_part = text.split("\n## MD-CRL\n", 1)
    missing = []
    for prefix, part in (("ws-crl", ws_part), ("md-crl", md_part)):
        cited = [int(m.group(1)) for m in re.finditer(r"^\|[^|\n]*\D(\d+)\) \|", part, re.M)]
        assert cited, f"no {prefix} ids found in the tables of docs/reproducing.md"
        missing += [f"{prefix} {i}" for i in cited if i not in index[prefix]]
    assert not missing, "table ids missing from the quirk index: " + ", ".join(missing)


@pytest.mark.parametrize("name", SCANNED)
def test_nothing_points_outside_the_repository(name):
    hits = []
    for f in _files():
        if f.relative_to(ROOT).parts[0] != name:
            continue
        for number, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{f.relative_to(ROOT)}:{number}")
    assert not hits, "points outside the repository (../shared, notes files): " + ", ".join(hits)
