"""The docs a newcomer reads: a short README that links every page, links that lead somewhere,
and reference pages that say what the code declares."""
import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Dict, List, Set, Tuple

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = REPO / "docs"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _pages() -> List[Path]:
    return [README] + sorted(DOCS.rglob("*.md")) + [REPO / "bench" / "NOTES.md"]


def _slug(title: str) -> str:
    """GitHub's anchor of a heading."""
    s = title.strip().lower().replace("`", "")
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def _anchors(page: Path) -> Set[str]:
    found: Set[str] = set()
    code = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            code = not code
        m = None if code else re.match(r"^#{1,6} (.*)$", line)
        if m:
            found.add(_slug(m.group(1)))
    return found


def _links(page: Path) -> List[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z]+:", t)]


def test_the_readme_is_short_and_links_every_page_of_the_docs() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < 200
    linked = {(README.parent / t.split("#")[0]).resolve() for t in _links(README) if not t.startswith("#")}
    pages = sorted(DOCS.rglob("*.md"))
    assert len(pages) >= 10
    assert [str(p.relative_to(REPO)) for p in pages if p.resolve() not in linked] == []


def test_every_relative_link_leads_to_a_file_and_heading_that_exist() -> None:
    anchors: Dict[Path, Set[str]] = {}
    broken: List[Tuple[str, str]] = []
    for page in _pages():
        for target in _links(page):
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page.resolve()
            if not dest.exists():
                broken.append((str(page.relative_to(REPO)), target))
                continue
            if anchor and dest.suffix == ".md":
                if anchor not in anchors.setdefault(dest, _anchors(dest)):
                    broken.append((str(page.relative_to(REPO)), target))
    assert broken == []


def _reference_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("reference_docs", REPO / "tools" / "reference_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_reference_pages_are_up_to_date() -> None:
    """Messages and parameter tables are written from msg/srv/action and the declarations:
    `python tools/reference_docs.py` rewrites them after a change."""
    stale = [str(path.relative_to(REPO)) for path, text in _reference_docs().generated().items()
             if path.read_text(encoding="utf-8") != text]
    assert stale == [], "run `python tools/reference_docs.py`"


def test_the_messages_page_holds_every_definition() -> None:
    text = (DOCS / "reference" / "messages.md").read_text(encoding="utf-8")
    for folder in ("msg", "srv", "action"):
        for path in sorted((REPO / folder).iterdir()):
            assert f"### `ml_bridge/{path.stem}`" in text
            assert path.read_text().rstrip() in text


def test_the_readme_starts_with_the_two_commands() -> None:
    commands = [line for line in README.read_text(encoding="utf-8").splitlines() if line.startswith("make ")]
    assert commands[0].startswith("make demo") and commands[1].startswith("make test")
