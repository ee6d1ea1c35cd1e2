"""No pattern that judges client input ends in "$": it also matches before a trailing newline.

A channel slug, a path or a header ending in "\\n" (a %0A in the URL) passed such a
check (events/access/cors.py's history path did). Patterns are matched whole
(``fullmatch``) or end in ``\\Z``. Django's ``re_path`` patterns are exempt: Django
matches an endpoint's "$" pattern with ``fullmatch`` itself.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(
    path
    for package in ("events", "pushsite")
    for path in (ROOT / package).rglob("*.py")
    if "migrations" not in path.parts
)
# JSON Schema patterns (ECMAScript: "$" is the end of the string there), not Python's.
SCHEMA_MODULES = {ROOT / "events" / "http" / "openapi.py"}


def ends_with_dollar(pattern: str) -> bool:
    return pattern.endswith("$") and not pattern.endswith("\\$")


def compiled_patterns(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in {"compile", "match", "search", "fullmatch"}
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "re"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def test_no_compiled_pattern_ends_in_a_dollar() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {pattern!r}"
        for path in SOURCES
        if path not in SCHEMA_MODULES
        for line, pattern in compiled_patterns(path)
        if ends_with_dollar(pattern)
    ]
    assert offenders == []


def test_the_settings_patterns_end_in_z_or_nothing() -> None:
    patterns = [settings.CORS_URLS_REGEX, *getattr(settings, "SECURE_REDIRECT_EXEMPT", [])]
    assert [pattern for pattern in patterns if ends_with_dollar(pattern)] == []


def test_the_settings_files_patterns_end_in_z_or_nothing() -> None:
    # SECURE_REDIRECT_EXEMPT is set only with DJANGO_HTTPS=1: read from the file, not the settings.
    text = (ROOT / "pushsite" / "settings.py").read_text()
    assert [raw for raw in re.findall(r'r"([^"]*)"', text) if ends_with_dollar(raw)] == []
