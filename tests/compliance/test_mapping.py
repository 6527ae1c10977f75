"""The compliance mapping names real tests: a renamed or deleted test breaks this, not the claim."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MAPPING = REPO / "compliance" / "README.md"
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)?(?:::(\w+))?(?:\[[^\]]*\])?`")


def references() -> list[tuple[str, str]]:
    """(file, test) pairs; ``::name`` alone refers to the file named last in the same row."""
    found = []
    for row in MAPPING.read_text().splitlines():
        current = ""
        for path, name in REFERENCE.findall(row):
            current = path or current
            if current:
                found.append((current, name))
    return found


def test_every_test_the_mapping_names_exists() -> None:
    named = references()
    assert len(named) > 30
    missing = []
    for path, name in named:
        source = REPO / path
        if not source.is_file():
            missing.append(path)
        elif name and not re.search(rf"^(async )?def {name}\(", source.read_text(), re.M):
            missing.append(f"{path}::{name}")
    assert missing == []


def test_every_regulation_the_issue_lists_has_a_row() -> None:
    text = MAPPING.read_text()
    for clause in ("164.312(a)(1)", "(b) audit controls", "(c)(1) integrity", "164.316(b)(2)"):
        assert clause in text
    for article in (
        "Art. 5(1)(e)",
        "Art. 17",
        "Art. 30",
        "Art. 32",
        "Art. 33",
        "Art. 12",
        "Art. 19",
    ):
        assert f"| {article}" in text
