"""docs/design.md is the design document the code cites: every cited section exists, nothing cites the old plan."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "design.md"
FOLDERS = ("envs", "agents", "training", "eval", "serving", "restock", "configs", "tests", "docs")
CITE = re.compile(r"docs/design\.md#([A-Za-z0-9_-]+)")


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def anchors(text: str) -> set[str]:
    out, fenced = set(), False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#{1,6} (.+)$", line)):
            out.add(slug(m.group(1)))
    return out


def sources(suffixes: tuple[str, ...]) -> list[Path]:
    files = list(ROOT.glob("*.md")) if ".md" in suffixes else []
    for folder in FOLDERS:
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in suffixes and p.is_file()]
    return sorted(files)


def test_design_doc__slug_is_githubs():
    assert slug("What differs from the original plan") == "what-differs-from-the-original-plan"
    assert slug("Training, export and serving") == "training-export-and-serving"
    assert anchors("# A\n```\n# not a heading\n```\n## B c\n") == {"a", "b-c"}


def test_design_doc__every_cited_section_exists():
    have = anchors(DOC.read_text(encoding="utf-8"))
    cited: dict[str, list[str]] = {}
    for p in sources((".py", ".md", ".ipynb")):
        for m in CITE.finditer(p.read_text(encoding="utf-8", errors="replace")):
            cited.setdefault(m.group(1), []).append(str(p.relative_to(ROOT)))
    assert cited, "no docs/design.md#<section> citation found: the scan is looking in the wrong place"
    missing = {a: where for a, where in cited.items() if a not in have}
    assert not missing, f"cited sections that are not headings of docs/design.md: {missing}"


def test_design_doc__code_cites_no_document_outside_the_repository():
    old = re.compile(r"DESIGN\.md|reference/shields\.md")
    hits = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in sources((".py",))
        if p != Path(__file__).resolve()
        for i, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if old.search(line)
    ]
    assert not hits, f"cite docs/design.md#<section> instead: {hits}"
