"""Line charts drawn on the server as SVG: no charting script is fetched or run, so the console's
Content-Security-Policy (no inline scripts or styles, nothing from elsewhere) holds. Colours
come from the stylesheet's ``.chart``, ``.line`` and ``.grid`` classes, never from attributes.

A reading that is ``None`` (NVML could not take it, or no sample) breaks the line, as does a
silence longer than ``max_gap`` (a node that was offline): a gap is shown, never bridged."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

Point = tuple[datetime, float | None]

WIDTH = 600
HEIGHT = 160
LEFT = 56  # room for the value labels
RIGHT = 8
TOP = 10
BOTTOM = 24  # room for the time labels
TIME_FORMAT = "%Y-%m-%d %H:%M"


def number(value: float) -> str:
    """A reading for people: at most one decimal, none when it is whole."""
    text = f"{value:,.1f}"
    return text[:-2] if text.endswith(".0") else text


def _with_unit(value: float, unit: str) -> str:
    return f"{number(value)} {unit}".strip()


def _segments(
    points: Sequence[Point], max_gap: timedelta | None
) -> list[list[tuple[datetime, float]]]:
    """Runs of consecutive known readings; a None or a long silence starts a new run."""
    runs: list[list[tuple[datetime, float]]] = []
    current: list[tuple[datetime, float]] = []
    previous: datetime | None = None
    for moment, value in sorted(points, key=lambda p: p[0]):
        silent = max_gap is not None and previous is not None and moment - previous > max_gap
        if value is None or silent:
            if current:
                runs.append(current)
            current = []
        if value is not None:
            current.append((moment, float(value)))
        previous = moment
    if current:
        runs.append(current)
    return runs


def _local(moment: datetime) -> str:
    return timezone.localtime(moment).strftime(TIME_FORMAT)


def line_chart(
    points: Sequence[Point],
    *,
    title: str,
    unit: str = "",
    start: datetime | None = None,
    end: datetime | None = None,
    floor: float | None = None,
    ceiling: float | None = None,
    max_gap: timedelta | None = None,
) -> SafeString:
    """An SVG line chart of ``(time, value)`` points between ``start`` and ``end`` (the points'
    own span if not given), its value axis from ``floor`` to ``ceiling`` (the readings' range if
    not given, widened to hold every reading). ``title`` names it for screen readers, with the
    span, the lowest, highest and latest reading."""
    known = [(t, float(v)) for t, v in points if v is not None]
    times = [t for t, _ in points]
    start = start or (min(times) if times else None)
    end = end or (max(times) if times else None)
    summary = _summary(title, known, unit, start, end)
    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(summary)}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(summary)}</title>",
    ]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    bottom, right = TOP + plot_h, LEFT + plot_w
    parts += [  # the frame: baseline, top line and the time axis's ends
        f'<line class="grid" x1="{LEFT}" y1="{TOP}" x2="{right}" y2="{TOP}"/>',
        f'<line class="grid" x1="{LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}"/>',
        f'<line class="grid" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}"/>',
    ]
    if not known or start is None or end is None:
        parts.append(
            f'<text x="{LEFT + plot_w / 2:.0f}" y="{TOP + plot_h / 2:.0f}" '
            'text-anchor="middle">No readings in this period</text>'
        )
        parts.append("</svg>")
        return mark_safe("".join(parts))  # noqa: S308 - every piece of text above is escaped

    values = [v for _, v in known]
    low = min(values) if floor is None else min(floor, *values)
    high = max(values) if ceiling is None else max(ceiling, *values)
    if high == low:  # a flat line sits in the middle
        low, high = low - 1, high + 1
    span = max((end - start).total_seconds(), 1.0)

    def x(moment: datetime) -> float:
        return LEFT + plot_w * (moment - start).total_seconds() / span

    def y(value: float) -> float:
        return TOP + plot_h * (high - value) / (high - low)

    parts += [
        f'<text x="{LEFT - 4}" y="{TOP + 4}" text-anchor="end">{escape(_with_unit(high, unit))}</text>',
        f'<text x="{LEFT - 4}" y="{bottom}" text-anchor="end">{escape(_with_unit(low, unit))}</text>',
        f'<text x="{LEFT}" y="{HEIGHT - 6}">{escape(_local(start))}</text>',
        f'<text x="{right}" y="{HEIGHT - 6}" text-anchor="end">{escape(_local(end))}</text>',
    ]
    for run in _segments(points, max_gap):
        if len(run) == 1:  # a lone reading between gaps is a dot, not an invisible line
            moment, value = run[0]
            parts.append(f'<circle class="line" cx="{x(moment):.1f}" cy="{y(value):.1f}" r="2"/>')
        else:
            coordinates = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in run)
            parts.append(f'<polyline class="line" points="{coordinates}"/>')
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every piece of text above is escaped


def _summary(
    title: str,
    known: list[tuple[datetime, float]],
    unit: str,
    start: datetime | None,
    end: datetime | None,
) -> str:
    if not known or start is None or end is None:
        return f"{title}: no readings in this period."
    values = [v for _, v in known]
    latest = max(known, key=lambda p: p[0])[1]
    return (
        f"{title}, {_local(start)} to {_local(end)}: {len(known)} reading"
        f"{'' if len(known) == 1 else 's'}, lowest {_with_unit(min(values), unit)}, "
        f"highest {_with_unit(max(values), unit)}, latest {_with_unit(latest, unit)}."
    )
