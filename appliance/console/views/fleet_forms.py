"""Reading the fleet pages' forms: each is checked by the same request schema the management API
checks its JSON with (``appliance.fleet.schemas``), so a form and an API call obey one set of
rules, and anything malformed becomes a field error rather than a crash."""

from __future__ import annotations

from typing import Any, TypeVar

import pydantic
from django.http import QueryDict

from appliance.console.base import FormErrors, schema_errors

S = TypeVar("S", bound=pydantic.BaseModel)


def checked(
    schema: type[S], data: dict[str, Any], errors: FormErrors | None = None
) -> tuple[S | None, FormErrors]:
    """The form's data as ``schema`` reads it, or the field errors that stop it (added to
    ``errors`` found while reading the form)."""
    errors = FormErrors() if errors is None else errors
    try:
        parsed = schema.model_validate(data)
    except pydantic.ValidationError as invalid:
        return None, schema_errors(invalid, errors=errors)
    return (None if errors else parsed), errors


def text(form: QueryDict, name: str) -> str:
    return form.get(name, "").strip()


def optional(form: QueryDict, name: str) -> str | None:
    """A field left empty means "not given" (the schema's default), not an empty string."""
    return text(form, name) or None


def number_list(form: QueryDict, name: str, errors: FormErrors) -> list[int]:
    """Whole numbers separated by commas or spaces (GPU indices); anything else is a field
    error."""
    numbers = []
    for item in text(form, name).replace(",", " ").split():
        try:
            numbers.append(int(item))
        except ValueError:
            errors.add(name, f"{item!r} is not a whole number.")
    return numbers


def ids(form: QueryDict, name: str, errors: FormErrors) -> list[int]:
    """The chosen ids of a multiple choice; one that is not a number is a field error."""
    chosen = []
    for item in form.getlist(name):
        try:
            chosen.append(int(item))
        except ValueError:
            errors.add(name, f"{item!r} is not a valid choice.")
    return chosen
