"""The docs cannot drift: the API reference is the code's, every link resolves, the README stays one screen or two,
and the architecture page names every package folder and the import layers pyproject.toml enforces."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md")])
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
README_MAX_LINES = 250


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    out: set[str] = set()
    in_code = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            out.add(_slug(line.lstrip("#")))
    return out


def _links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return [a or b for a, b in LINK.findall(text)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_resolves(page: Path) -> None:
    broken = []
    for link in _links(page):
        if link.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link}: no such file {target}")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            broken.append(f"{link}: no heading #{anchor} in {target.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}: broken links:\n  " + "\n  ".join(broken)


def test_readme_fits_a_screen_or_two() -> None:
    lines = len((REPO / "README.md").read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; keep it <= {README_MAX_LINES}, the rest in docs/"


def test_api_reference_is_generated_from_the_code() -> None:
    spec = importlib.util.spec_from_file_location("api_docs", REPO / "tools" / "api_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = module.render()
    assert (REPO / "docs" / "api.md").read_text(encoding="utf-8") == expected, (
        "docs/api.md differs from the code's signatures and docstrings: run python3 tools/api_docs.py"
    )


def test_architecture_page_names_every_package_and_the_enforced_layers() -> None:
    page = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    for root in ("cluster", "trainables", "search_spaces"):
        for folder in sorted(p.parent for p in (REPO / root).rglob("__init__.py")):
            rel = folder.relative_to(REPO).as_posix() + "/"
            assert re.search(rf"^{re.escape(rel)}\s", page, re.M), f"docs/architecture.md has no line for {rel}"
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    layers = next(c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers")["layers"]
    shown = " > ".join(layers)
    assert shown in page, f"docs/architecture.md does not state the enforced layer order {shown!r}"
