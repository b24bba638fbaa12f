"""The documents a user reads stay true to the code: the README's Layout names every module of the
package (and no module that is gone), every citation of docs/design.md names a heading it has, and
the README's table of environment variables lists every `DNN_SEARCH_*` variable the package reads.

These read the source tree, not an installed copy: a module added without a Layout line, or a
variable read without a table row, fails here.
"""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dnn_search"


def _section(markdown: str, heading: str) -> str:
    """The text of the `## HEADING` section (up to the next level-2 heading)."""
    start = markdown.index(f"\n## {heading}\n")
    end = markdown.find("\n## ", start + 1)
    return markdown[start:end if end > 0 else None]


def package_modules() -> set[str]:
    """Every module of the package as Layout names it: `name` for dnn_search/name.py and for
    dnn_search/<layer>/name.py (the layer's own bullet names the folder)."""
    return {p.stem for p in PACKAGE.rglob("*.py") if p.stem not in ("__init__", "__main__")}


def test_readme_layout_names_every_module():
    layout = _section((ROOT / "README.md").read_text(), "Layout")
    named = set(re.findall(r"`([a-z_]+)`", layout))
    missing = sorted(package_modules() - named)
    assert not missing, f"README's Layout does not name these modules: {missing}"


def test_readme_layout_names_no_missing_module():
    """Every `dnn_search/...py` path or `module` named in Layout's layer bullets exists."""
    layout = _section((ROOT / "README.md").read_text(), "Layout")
    bullets = [line for line in layout.splitlines() if line.startswith(("- **", "  "))]
    named = set(re.findall(r"`([a-z_]+)`", "\n".join(bullets)))
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("__")}
    extra = sorted(named - package_modules() - folders)
    assert not extra, f"README's Layout names modules that do not exist: {extra}"


def _headings(markdown: str) -> set[str]:
    return {m.group(1).strip() for m in re.finditer(r"^#+\s+(.+)$", markdown, flags=re.M)}


def test_design_doc_citations_name_its_headings():
    """`docs/design.md, "Heading"` must name a heading of docs/design.md; numbered sections
    (`docs/design.md §1.3`) do not exist there (they are shared/DESIGN.md's)."""
    headings = _headings((ROOT / "docs" / "design.md").read_text())
    sources = [*PACKAGE.rglob("*.py"), ROOT / "README.md", *(ROOT / "search_spaces").glob("*.yaml"),
               *(ROOT / "scripts").glob("*.py")]
    bad = []
    for path in sources:
        text = re.sub(r"\s*\n\s*#?\s*", " ", path.read_text())  # citations wrap across lines
        for cited in re.findall(r"docs/design\.md[`\]\)(]*,\s*\"([^\"]+)\"", text):
            if cited not in headings:
                bad.append(f"{path.relative_to(ROOT)}: \"{cited}\"")
        bad += [f"{path.relative_to(ROOT)}: §{n}" for n in re.findall(r"docs/design\.md[`\]\)(]*\s*§([\d.]+)", text)]
    assert not bad, f"citations of docs/design.md that name no heading of it: {bad}"


# a `DNN_SEARCH_*` name that is not an environment variable: the dashboard child's ready line on stdout
NOT_VARIABLES = {"DNN_SEARCH_DASHBOARD_LISTENING"}


def _mentioned(paths) -> set[str]:
    found: set[str] = set()
    for path in paths:
        found |= set(re.findall(r"DNN_SEARCH_[A-Z_]+[A-Z]", path.read_text()))
    return found - NOT_VARIABLES


def test_readme_documents_every_environment_variable():
    """Every variable the package reads has a row; a row whose variable is read by nothing (the package,
    scripts/, tests/, .ci/run) is stale."""
    read = _mentioned(PACKAGE.rglob("*.py"))
    scripts = [p for p in (ROOT / "scripts").rglob("*") if p.is_file() and p.suffix in (".py", ".sh", "")]
    anywhere = read | _mentioned([*scripts, *(ROOT / "tests").glob("*.py"), ROOT / ".ci" / "run"])
    table = _section((ROOT / "README.md").read_text(), "Environment variables")
    rows = set(re.findall(r"^\| `(DNN_SEARCH_[A-Z_]+)`", table, flags=re.M))
    assert read - rows == set(), f"variables the package reads that the README's table lacks: {sorted(read - rows)}"
    assert rows - anywhere == set(), f"README rows for variables nothing reads: {sorted(rows - anywhere)}"
