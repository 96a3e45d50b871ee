"""Templates and the filters that format numbers for people.

Jinja2 with autoescaping on for every template: every value a user chose (a dataset's name,
a column name, a job's tags) reaches the page as text, never as markup. ``StrictUndefined``
makes a misspelt name in a template an error in the tests rather than a blank on the page.
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from service.sweeps.read_schemas import IntervalRead

HERE = Path(__file__).resolve().parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"
STATIC_URL = "/ui/static"
MISSING = "—"


def number(value: Any, digits: int = 4) -> str:
    """``value`` for reading: ints with thousands separators (12,345); floats to ``digits``
    significant figures, fixed-point from 0.001 to 10¹² (0.04127, 1,235, 5,470,000),
    scientific outside (1.23e-04); None, NaN and infinity as a dash."""
    if value is None or isinstance(value, bool):
        return MISSING if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not isinstance(value, float) or not math.isfinite(value):
        return MISSING if isinstance(value, float) else str(value)
    if value == 0.0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    rounded = round(value, digits - 1 - magnitude)
    if rounded != 0.0:  # 999.96 rounds up to 1,000: one more digit before the point
        magnitude = math.floor(math.log10(abs(rounded)))
    if -3 <= magnitude < 12:
        decimals = digits - 1 - magnitude
        return f"{round(value, decimals):,.{max(decimals, 0)}f}"
    return f"{value:.{digits - 1}e}"


def duration(seconds: float | None) -> str:
    """Seconds as "0.42 s", "3 min 05 s" or "2 h 07 min"; None as a dash."""
    if seconds is None or not math.isfinite(seconds):
        return MISSING
    if seconds < 60:
        return f"{seconds:.2g} s" if seconds < 1 else f"{seconds:.3g} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def when(moment: datetime | None) -> str:
    """A time in UTC to the second, e.g. "2026-11-26 12:00:01 UTC"."""
    if moment is None:
        return MISSING
    if moment.tzinfo is None:  # SQLite hands back naive datetimes, stored in UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def day_minute(moment: datetime | None) -> str:
    """A time in UTC to the minute, for tables: "2026-11-26 12:00"."""
    return MISSING if moment is None else when(moment)[:16]


def percent(fraction: float | None) -> str:
    """0.452 → "45%"."""
    if fraction is None or not math.isfinite(fraction):
        return MISSING
    return f"{100.0 * fraction:.0f}%"


def interval(bounds: IntervalRead | None) -> str:
    """A confidence interval as "low – high"; an open end as "?"."""
    if bounds is None:
        return MISSING
    shown = [number(end, 3) if end is not None else "?" for end in (bounds.low, bounds.high)]
    return f"{shown[0]} – {shown[1]}"


def short_id(identifier: str) -> str:
    """The first 8 characters of a UUID: enough to tell rows apart on a page."""
    return identifier[:8]


@cache
def asset_version(name: str) -> str:
    """A short hash of a static file's bytes, so a changed file is fetched again."""
    return hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]


def asset_url(name: str) -> str:
    """The URL of a static file, with its version."""
    return f"{STATIC_URL}/{name}?v={asset_version(name)}"


@cache
def environment() -> Environment:
    """The dashboard's Jinja2 environment (built once, on first use)."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        num=number,
        duration=duration,
        when=when,
        day_minute=day_minute,
        percent=percent,
        interval=interval,
        short_id=short_id,
    )
    env.globals.update(asset_url=asset_url, MISSING=MISSING)
    return env


def render_page(template: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
    """``template`` rendered with ``context`` as an HTML response."""
    html = environment().get_template(template).render(**context)
    return HTMLResponse(html, status_code=status_code)


__all__ = [
    "STATIC_DIR",
    "STATIC_URL",
    "asset_url",
    "day_minute",
    "duration",
    "environment",
    "interval",
    "number",
    "percent",
    "render_page",
    "short_id",
    "when",
]
