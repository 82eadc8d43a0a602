"""The dashboard page of `consistency serve`: server-rendered SVG charts
(pygal) in a Jinja2 page. Nothing is fetched from elsewhere: the page works
offline; it refreshes its panels in place."""

from __future__ import annotations

import datetime as dt
from functools import cache
from typing import Any

import pygal
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from pygal.style import Style

SEVERITY_COLOURS = {"critical": "#d64545", "warning": "#e8a33d", "info": "#4a90d9"}
RELAY_COLOURS = {"pending": "#4a90d9", "retrying": "#e8a33d", "in_flight": "#8e7cc3",
                 "dead": "#6b1f1d"}

STYLE = dict(background="transparent", plot_background="transparent",
             foreground="#2b3440", foreground_strong="#1b2430", foreground_subtle="#8a96a3",
             font_family="system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
             label_font_size=13, major_label_font_size=13, legend_font_size=13,
             value_font_size=12, tooltip_font_size=12, opacity=".9", opacity_hover="1")


def _style(colours: list[str]) -> Style:
    return Style(colors=tuple(colours), **STYLE)


def _chart(kind: type[pygal.graph.graph.Graph], colours: list[str], **config: Any) -> Any:
    # js=[]: pygal links its tooltip script from the web by default; the
    # dashboard must not fetch anything.
    settings: dict[str, Any] = dict(
        js=[], disable_xml_declaration=True, explicit_size=False, width=720, height=300,
        legend_at_bottom=True, legend_box_size=14, margin=12, spacing=12, show_y_guides=True,
        print_zeroes=False)
    return kind(style=_style(colours), **{**settings, **config})


def _count_ticks(largest: float) -> list[int] | None:
    """Whole-number ticks for counts (pygal would label 0.2, 0.4 ... under 5)."""
    top = int(largest)
    if top < 1:
        return None
    step = max(1, -(-top // 6))
    return list(range(0, top + step, step))


def _svg(chart: Any) -> Markup:
    return Markup(chart.render(is_unicode=True))


def _hour_label(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%H:00")


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(max(seconds, 0))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "never"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def alerts_chart(series: list[dict[str, Any]]) -> Markup | None:
    if not any(h["critical"] + h["warning"] + h["info"] for h in series):
        return None
    chart = _chart(pygal.StackedBar, list(SEVERITY_COLOURS.values()),
                   x_label_rotation=0, show_minor_x_labels=False,
                   x_labels_major_every=3, truncate_label=-1,
                   y_labels=_count_ticks(max(h["critical"] + h["warning"] + h["info"]
                                             for h in series)))
    chart.x_labels = [_hour_label(h["hour"]) for h in series]
    for severity in SEVERITY_COLOURS:
        chart.add(severity, [h[severity] or None for h in series])
    return _svg(chart)


def rate_chart(series: list[dict[str, Any]]) -> Markup | None:
    if not any(h["calls"] for h in series):
        return None
    chart = _chart(pygal.Line, ["#2e8b57"], range=(0, 100), show_legend=False,
                   show_minor_x_labels=False, x_labels_major_every=3, truncate_label=-1,
                   value_formatter=lambda v: f"{v:.1f} %", dots_size=3,
                   allow_interruptions=True)
    chart.x_labels = [_hour_label(h["hour"]) for h in series]
    chart.add("consistent calls", [
        round(100.0 * (h["calls"] - h["inconsistent"]) / h["calls"], 2) if h["calls"] else None
        for h in series])
    return _svg(chart)


def check_chart(runs: list[dict[str, Any]]) -> Markup | None:
    if not runs:
        return None
    chart = _chart(pygal.Bar, ["#4a90d9"], show_legend=False, show_minor_x_labels=False,
                   x_labels_major_count=6, value_formatter=lambda v: f"{v:.1f} ms")
    chart.x_labels = [dt.datetime.fromtimestamp(r["started_at"], dt.UTC).strftime("%H:%M")
                      for r in runs]
    chart.add("duration", [float(r["duration_ms"] or 0) for r in runs])
    return _svg(chart)


def review_chart(review: dict[str, Any]) -> Markup | None:
    if not (review["pending"] or review["in_progress"]):
        return None
    chart = _chart(pygal.HorizontalBar, ["#e8a33d", "#4a90d9"], height=180,
                   print_values=True, show_legend=True,
                   y_labels=_count_ticks(max(review["pending"], review["in_progress"])))
    chart.add("pending", review["pending"])
    chart.add("in progress", review["in_progress"])
    return _svg(chart)


def relay_chart(relay: list[dict[str, Any]]) -> Markup | None:
    if not relay:
        return None
    chart = _chart(pygal.HorizontalStackedBar, list(RELAY_COLOURS.values()),
                   height=max(180, 70 * len(relay) + 90), truncate_label=40,
                   y_labels=_count_ticks(max(sum(s[k] for k in RELAY_COLOURS) for s in relay)))
    chart.x_labels = [s["sink"] for s in relay]
    for status in RELAY_COLOURS:
        chart.add(status.replace("_", " "), [s[status] or None for s in relay])
    return _svg(chart)


@cache
def _env() -> Environment:
    env = Environment(loader=PackageLoader("orchestrator", "templates"),
                      autoescape=select_autoescape(["html"]))
    env.filters["duration"] = human_duration
    env.filters["when"] = _when
    return env


def _context(data: dict[str, Any], refresh_seconds: int) -> dict[str, Any]:
    series = data["series"]
    alerts_day = sum(h["critical"] + h["warning"] + h["info"] for h in series)
    relay_owed = sum(s["pending"] + s["retrying"] + s["in_flight"] for s in data["relay"])
    relay_dead = sum(s["dead"] for s in data["relay"])
    not_closed = [c for c in data["circuit_list"]
                  if c["state"] in ("open", "half_open", "forced_open")]
    empty = (not data["day"]["calls"] and not alerts_day and not data["check_runs"]
             and not data["circuit_list"] and not data["relay"]
             and not (data["review"]["pending"] or data["review"]["in_progress"]))
    return {
        "data": data, "empty": empty, "refresh_seconds": refresh_seconds,
        "now": _when(data["now"]),
        "rate_pct": round(100.0 * float(data["day"]["consistency_ratio"]), 2),
        "alerts_day": alerts_day, "relay_owed": relay_owed, "relay_dead": relay_dead,
        "not_closed": not_closed,
        "charts": {"alerts": alerts_chart(series), "rate": rate_chart(series),
                   "checks": check_chart(data["check_runs"]),
                   "review": review_chart(data["review"]),
                   "relay": relay_chart(data["relay"])},
    }


def render(data: dict[str, Any], refresh_seconds: int = 30, fragment: bool = False) -> str:
    context = _context(data, refresh_seconds)
    name = "panels.html" if fragment else "dashboard.html"
    return _env().get_template(name).render(**context)


def render_unavailable(error: str, refresh_seconds: int = 30, fragment: bool = False) -> str:
    name = "unavailable.html" if fragment else "dashboard.html"
    return _env().get_template(name).render(unavailable=error, refresh_seconds=refresh_seconds,
                                            data=None, empty=False)
