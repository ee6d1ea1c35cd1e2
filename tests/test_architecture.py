"""The shape of the code: the import contracts hold, and the docs cite files that exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# A path to one of the project's own files, as prose and comments cite them.
CITED_PATH = re.compile(
    r"\b((?:events|pushsite|tests|bench|scripts|docs|templates)/[\w./-]*\w\.(?:py|md|html|js|css|sh))\b"
)


def test_import_contracts_hold() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def cited_paths() -> list[tuple[str, str]]:
    sources = [
        ROOT / "README.md",
        ROOT / "CHANGELOG.md",
        *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "events").rglob("*.py")),
        *sorted((ROOT / "pushsite").glob("*.py")),
    ]
    cited = []
    for source in sources:
        for match in CITED_PATH.finditer(source.read_text()):
            cited.append((str(source.relative_to(ROOT)), match.group(1)))
    return cited


# Besides paths from the repository's top: template names and static URLs.
SEARCHED = [ROOT, ROOT / "templates", ROOT / "events" / "static"]


def exists(path: str) -> bool:
    return any((folder / path).exists() for folder in SEARCHED)


def test_every_cited_file_exists() -> None:
    # The CHANGELOG's history names files as they were called then.
    missing = [
        f"{source} cites {path}"
        for source, path in cited_paths()
        if not exists(path) and source != "CHANGELOG.md"
    ]
    assert missing == []


def test_the_citation_check_sees_citations() -> None:
    assert ("docs/architecture.md", "events/deliver/relay.py") in cited_paths()


def tree_listing() -> set[str]:
    """The modules docs/architecture.md's tree names, as paths."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    listed: set[str] = set()
    package = None
    for line in doc[doc.index("## The tree") :].splitlines():
        heading = re.match(r"\| \*\*`([\w/]+)/`\*\*", line)
        if heading:
            package = heading.group(1)
            continue
        row = re.match(r"\| (`[^|]+`(?:, `[^|]+`)*) \|", line)
        if row and package:
            listed.update(f"{package}/{name}" for name in re.findall(r"`([\w./]+)`", row.group(1)))
    return listed


def test_the_architecture_tree_names_every_module() -> None:
    # One line per module: a module added without a line there fails here.
    modules = [
        path.relative_to(ROOT).as_posix()
        for folder in ("events", "pushsite")
        for path in (ROOT / folder).rglob("*.py")
        if not {"migrations", "management", "templatetags"} & set(path.parts)
        and path.name not in {"__init__.py", "apps.py"}
    ]
    assert sorted(set(modules) - tree_listing()) == []
