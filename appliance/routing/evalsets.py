"""Evaluation sets: parsing an admin's uploaded JSONL file into checked evaluation items.

The upload is untrusted and often hand-edited, so every line is checked before anything is stored
or run, and every problem found is reported at once, with its line number, so the admin can fix
the file in one pass instead of one error per upload.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NoReturn

from appliance.core.errors import ValidationFailed
from appliance.routing.scorers import Scorer, ScorerInvalid, expected_check, scorer_parse

MAX_ITEMS = 5000
MAX_BYTES = 5 * 2**20

# Past this many problems the file is wrong throughout; the first ones are enough to act on.
MAX_PROBLEMS = 50

ROLES = ("system", "user", "assistant")

_ITEM_KEYS = ("expected", "id", "messages", "scorer")
_MESSAGE_KEYS = ("content", "role")

_CODE = "invalid_evaluation_set"


@dataclass(frozen=True)
class EvaluationItem:
    """One checked item: the conversation sent to a model, and how its answer is scored."""

    messages: list[dict[str, str]]
    expected: object
    scorer: Scorer


def evaluation_items_parse(
    text: str, *, default_scorer: object | None = None
) -> list[EvaluationItem]:
    """Parse JSONL ``text`` (one item per line; blank lines skipped) into evaluation items.

    ``default_scorer`` is a scorer spec for items without their own ``scorer``. Raises
    ``ValidationFailed`` (code ``invalid_evaluation_set``) listing the problems under the field
    ``jsonl``, each prefixed with its line number, or under ``default_scorer`` when that spec is bad.
    """
    # A str never takes fewer UTF-8 bytes than characters, so the cheap test comes first and a
    # huge upload is refused without being encoded.
    if len(text) > MAX_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        _refuse(f"The evaluation set is larger than {MAX_BYTES // 2**20} MiB.")

    fallback: Scorer | None = None
    if default_scorer is not None:
        try:
            fallback = scorer_parse(default_scorer)
        except ScorerInvalid as error:
            raise ValidationFailed(
                f"The default scorer is not valid: {error}",
                code=_CODE,
                fields={"default_scorer": [str(error)]},
            ) from None

    # Split on "\n" only: str.splitlines() also splits on U+2028 and friends, which JSON allows
    # raw inside strings, and that would break a valid line in two.
    lines = text.removeprefix("\ufeff").split("\n")
    numbered = [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        _refuse("The evaluation set is empty.", "the evaluation set has no items")
    if len(numbered) > MAX_ITEMS:
        _refuse(
            f"The evaluation set has {len(numbered)} items; at most {MAX_ITEMS} are allowed.",
        )

    items: list[EvaluationItem] = []
    problems: list[str] = []
    for number, line in numbered:
        line_problems: list[str] = []
        item = _item_parse(line, fallback, line_problems)
        problems.extend(f"line {number}: {problem}" for problem in line_problems)
        if item is not None and not line_problems:
            items.append(item)
        if len(problems) > MAX_PROBLEMS:
            break

    if problems:
        if len(problems) > MAX_PROBLEMS:
            detail = (
                f"The evaluation set has more than {MAX_PROBLEMS} problems; "
                f"the first {MAX_PROBLEMS} are listed."
            )
        else:
            count = len(problems)
            detail = f"The evaluation set has {count} problem{'' if count == 1 else 's'}."
        raise ValidationFailed(detail, code=_CODE, fields={"jsonl": problems[:MAX_PROBLEMS]})
    return items


def _item_parse(line: str, fallback: Scorer | None, problems: list[str]) -> EvaluationItem | None:
    try:
        data = json.loads(line, object_pairs_hook=_object_build, parse_constant=_constant_refuse)
    except RecursionError:
        problems.append("not valid JSON (nested too deeply)")
        return None
    except ValueError as error:
        problems.append(f"not valid JSON ({_json_error_text(error)})")
        return None
    if not isinstance(data, dict):
        problems.append("must be a JSON object")
        return None

    unknown = sorted(key for key in data if key not in _ITEM_KEYS)
    if unknown:
        problems.append(
            f"unknown key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(json.dumps(key) for key in unknown)} (allowed: {', '.join(_ITEM_KEYS)})"
        )
    if "id" in data:
        item_id = data["id"]
        if isinstance(item_id, bool) or not isinstance(item_id, str | int):
            problems.append("id must be a string or an integer")

    messages = _messages_parse(data.get("messages"), "messages" in data, problems)

    scorer = fallback
    if "scorer" in data:
        try:
            scorer = scorer_parse(data["scorer"])
        except ScorerInvalid as error:
            problems.append(str(error))
            scorer = None
    elif fallback is None:
        problems.append("scorer is missing and no default scorer was given")

    expected = data.get("expected")
    if scorer is not None:
        try:
            expected_check(scorer, expected)
        except ScorerInvalid as error:
            problems.append(str(error))

    if messages is None or scorer is None:
        return None
    return EvaluationItem(messages=messages, expected=expected, scorer=scorer)


def _messages_parse(
    value: object, present: bool, problems: list[str]
) -> list[dict[str, str]] | None:
    if not present:
        problems.append("messages is missing")
        return None
    if not isinstance(value, list) or not value:
        problems.append("messages must be a non-empty list")
        return None
    messages: list[dict[str, str]] = []
    ok = True
    for index, message in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            problems.append(f"{where} must be an object with role and content")
            ok = False
            continue
        unknown = sorted(key for key in message if key not in _MESSAGE_KEYS)
        if unknown:
            problems.append(
                f"{where} has unknown key{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(json.dumps(key) for key in unknown)} (allowed: role, content)"
            )
            ok = False
        role = message.get("role")
        if "role" not in message:
            problems.append(f"{where}.role is missing")
            ok = False
        elif role not in ROLES:
            problems.append(f"{where}.role must be system, user or assistant")
            ok = False
        content = message.get("content")
        if "content" not in message:
            problems.append(f"{where}.content is missing")
            ok = False
        elif not isinstance(content, str):
            problems.append(f"{where}.content must be a string")
            ok = False
        if isinstance(role, str) and isinstance(content, str):
            messages.append({"role": role, "content": content})
    if not any(message.get("role") == "user" for message in value if isinstance(message, dict)):
        problems.append("messages needs at least one user message")
        ok = False
    return messages if ok else None


def _object_build(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of two equal keys without a word; in a hand-edited file that is
    # almost always a mistake (two "expected" values), so it is refused.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {json.dumps(key)}")
        result[key] = value
    return result


def _constant_refuse(name: str) -> None:
    raise ValueError(f"{name} is not allowed in JSON")


def _json_error_text(error: ValueError) -> str:
    if isinstance(error, json.JSONDecodeError):
        return f"{error.msg} at column {error.colno}"
    return str(error)


def _refuse(detail: str, problem: str | None = None) -> NoReturn:
    raise ValidationFailed(detail, code=_CODE, fields={"jsonl": [problem or detail]})
