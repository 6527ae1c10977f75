"""Template helpers: times in the person's zone with UTC on hover, and form field errors."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django import template
from django.utils import timezone
from django.utils.html import format_html

register = template.Library()


@register.simple_tag
def when(moment: datetime | None, empty: str = "—") -> str:
    """``<time>`` in the active (the person's) time zone; the UTC time on hover and in
    ``datetime`` for machines."""
    if moment is None:
        return empty
    local = timezone.localtime(moment)
    utc = moment.astimezone(UTC)
    return format_html(
        '<time datetime="{}" title="{} UTC">{}</time>',
        utc.isoformat(timespec="seconds"),
        utc.strftime("%Y-%m-%d %H:%M:%S"),
        local.strftime("%Y-%m-%d %H:%M %Z"),
    )


@register.filter
def field_errors(errors: Any, name: str) -> list[str]:
    """The messages for one field of a FormErrors (none if there are no errors)."""
    if not errors:
        return []
    return list(errors.fields.get(name, []))


@register.filter
def get(mapping: Any, key: Any) -> Any:
    return mapping.get(key) if mapping else None


@register.filter
def lines(values: Any) -> str:
    """A list of lines as one text (escaped as usual), for a ``<pre>``."""
    return "\n".join(str(v) for v in values or [])
