"""Small server-side SVG charts for the admin dashboard: stacked bars, lines, horizontal
bars (plain, grouped or diverging) and a heat map. Each function takes values already
aggregated (a few hundred at most) and returns the markup of one inline <svg>, with a
<title>, a <desc> and an aria-label, ready for the template. Nothing is fetched and nothing
runs in the browser; the page's CSS (`.oz-chart …`) gives axes and text their colours, so
the charts follow the admin's light and dark themes. Series colours are the Okabe–Ito
palette, told apart by people with the common colour-vision deficiencies."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 560, 230
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 60, 14, 14, 36
MAX_X_LABELS = 8

# Okabe–Ito
BLUE, ORANGE, GREEN, PURPLE, GREY, VERMILLION, SKY, YELLOW = (
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#999999", "#D55E00", "#56B4E9", "#F0E442",
)


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 × 10^k at or above `value` (1 for nothing)."""
    if not value or value <= 0 or not math.isfinite(value):
        return 1.0
    exp = 10 ** math.floor(math.log10(value))
    for m in (1, 2, 2.5, 5, 10):
        if value <= m * exp * (1 + 1e-9):
            return m * exp
    return 10 * exp


def number(value: float) -> str:
    """Short axis text: 1200 -> 1.2k, 0.25 -> 0.25."""
    if value is None:
        return "–"
    if abs(value) >= 10_000:
        return f"{value / 1000:.0f}k"
    if abs(value) >= 1000:
        return f"{value / 1000:.1f}k".replace(".0k", "k")
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.3g}"


# Steps of a time axis (seconds): the axis shows 0 and four of them.
DURATION_STEPS = (5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800)


def duration_ceiling(value: float) -> float:
    """The top of a time axis: four whole steps (minutes, hours, days) at or above `value`."""
    for step in DURATION_STEPS:
        if 4 * step >= value:
            return 4.0 * step
    return nice_ceiling(value)


def percent(value: float) -> str:
    return "–" if value is None else f"{100 * value:.3g}%"


def duration(seconds: float) -> str:
    """Seconds as a short duration: 45 s, 12 min, 3.5 h, 2 d."""
    if seconds is None:
        return "–"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.3g} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.3g} h"
    return f"{seconds / 86400:.3g} d"


def _svg(chart_id: str, title: str, desc: str, width: float, height: float, body: list[str]) -> SafeString:
    t, d = escape(title), escape(desc)
    return mark_safe(  # noqa: S308 - every text piece below is escaped
        f'<svg xmlns="http://www.w3.org/2000/svg" id="{chart_id}" class="oz-svg" viewBox="0 0 {width:g} {height:g}" '
        f'width="{width:g}" height="{height:g}" role="img" aria-label="{t}" aria-labelledby="{chart_id}-title" '
        f'aria-describedby="{chart_id}-desc"><title id="{chart_id}-title">{t}</title><desc id="{chart_id}-desc">{d}</desc>'
        + "".join(body) + "</svg>"
    )


def _text(x: float, y: float, text: str, anchor: str = "middle", cls: str = "") -> str:
    klass = f' class="{cls}"' if cls else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{klass}>{escape(text)}</text>'


def _y_axis(top_value: float, left: float, right: float, top: float, bottom: float, fmt: Callable[[float], str],
            steps: int = 4) -> list[str]:
    out = []
    for i in range(steps + 1):
        value = top_value * i / steps
        y = bottom - (bottom - top) * i / steps
        out.append(f'<line class="{"oz-axis" if i == 0 else "oz-grid"}" x1="{left:.1f}" y1="{y:.1f}" x2="{right:.1f}" y2="{y:.1f}"/>')
        out.append(_text(left - 6, y + 4, fmt(value), "end"))
    return out


def _x_labels(labels: Sequence[str], xs: Sequence[float], y: float, max_labels: int = MAX_X_LABELS) -> list[str]:
    every = max(1, math.ceil(len(labels) / max_labels))
    return [_text(x, y, label) for i, (label, x) in enumerate(zip(labels, xs, strict=True)) if i % every == 0]


def stacked_bars(*, chart_id: str, title: str, desc: str, labels: Sequence[str], series: Sequence[dict],
                 fmt: Callable[[float], str] = number, width: int = WIDTH, height: int = HEIGHT) -> SafeString:
    """One bar per label, stacked from the series ({"name", "color", "values"}) in order."""
    left, right, top, bottom = PAD_LEFT, width - PAD_RIGHT, PAD_TOP, height - PAD_BOTTOM
    totals = [sum(s["values"][i] or 0 for s in series) for i in range(len(labels))]
    top_value = nice_ceiling(max(totals, default=0))
    body = _y_axis(top_value, left, right, top, bottom, fmt)
    band = (right - left) / max(1, len(labels))
    bar = max(1.0, band * 0.74)
    centres = []
    for i, label in enumerate(labels):
        x = left + band * i + (band - bar) / 2
        centres.append(x + bar / 2)
        y = bottom
        for s in series:
            value = s["values"][i] or 0
            if not value:
                continue
            h = value / top_value * (bottom - top)
            y -= h
            body.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{s["color"]}">'
                f"<title>{escape(label)}: {escape(s['name'])} {escape(fmt(value))}</title></rect>"
            )
    body += _x_labels(labels, centres, height - PAD_BOTTOM + 16, max_labels=MAX_X_LABELS * width // WIDTH)
    return _svg(chart_id, title, desc, width, height, body)


def lines(*, chart_id: str, title: str, desc: str, labels: Sequence[str], series: Sequence[dict],
          fmt: Callable[[float], str] = number, reference: dict | None = None,
          ceiling: Callable[[float], float] | None = None) -> SafeString:
    """One line per series ({"name", "color", "values" with None for gaps, "dashed"?});
    `reference` ({"value", "name", "color"}) draws a dashed horizontal line (a target)."""
    left, right, top, bottom = PAD_LEFT, WIDTH - PAD_RIGHT, PAD_TOP, HEIGHT - PAD_BOTTOM
    values = [v for s in series for v in s["values"] if v is not None]
    if reference is not None:
        values.append(reference["value"])
    top_value = (ceiling or nice_ceiling)(max(values, default=0) * 1.05)
    body = _y_axis(top_value, left, right, top, bottom, fmt)
    n = len(labels)
    step = (right - left) / (n - 1) if n > 1 else 0
    xs = [left + i * step if n > 1 else (left + right) / 2 for i in range(n)]

    def y_of(value: float) -> float:
        return bottom - value / top_value * (bottom - top)

    if reference is not None:
        y = y_of(reference["value"])
        body.append(f'<line x1="{left:.1f}" y1="{y:.1f}" x2="{right:.1f}" y2="{y:.1f}" stroke="{reference["color"]}" '
                    f'stroke-width="2" stroke-dasharray="6 4"><title>{escape(reference["name"])}</title></line>')
        body.append(_text(right - 2, y - 5, reference["name"], "end", "oz-ref"))
    for s in series:
        segment: list[str] = []
        segments = [segment]
        for x, value in zip(xs, s["values"], strict=True):
            if value is None:
                segment = []
                segments.append(segment)
                continue
            segment.append(f"{x:.1f},{y_of(value):.1f}")
        dash = ' stroke-dasharray="3 3"' if s.get("dashed") else ""
        for points in segments:
            if len(points) > 1:
                body.append(f'<polyline fill="none" stroke="{s["color"]}" stroke-width="2"{dash} points="{" ".join(points)}"/>')
        radius = 3 if n <= 40 else 2
        for label, x, value in zip(labels, xs, s["values"], strict=True):
            if value is not None:
                body.append(f'<circle cx="{x:.1f}" cy="{y_of(value):.1f}" r="{radius}" fill="{s["color"]}">'
                            f"<title>{escape(label)}: {escape(s['name'])} {escape(fmt(value))}</title></circle>")
    body += _x_labels(labels, xs, HEIGHT - PAD_BOTTOM + 16)
    return _svg(chart_id, title, desc, WIDTH, HEIGHT, body)


def hbars(*, chart_id: str, title: str, desc: str, rows: Sequence[dict], series: Sequence[dict],
          fmt: Callable[[float], str] = number, top_value: float | None = None, label_width: int = 150) -> SafeString:
    """Horizontal bars: one group per row ({"label", "values": [...one per series]}), one bar
    per series ({"name", "color"}). Negative values grow left of a centre line (diverging)."""
    per_bar, gap = 18, 12
    group = per_bar * len(series) + gap
    top, height = 8, 8 + group * len(rows) + 24
    left, right = label_width, WIDTH - 70
    values = [v for r in rows for v in r["values"] if v is not None]
    diverging = any(v < 0 for v in values)
    scale = top_value or nice_ceiling(max((abs(v) for v in values), default=0))
    zero = (left + right) / 2 if diverging else left
    half = (right - zero)
    body = [f'<line class="oz-axis" x1="{zero:.1f}" y1="{top - 4}" x2="{zero:.1f}" y2="{height - 22}"/>']
    for i, row in enumerate(rows):
        y0 = top + i * group
        body.append(_text(left - 8, y0 + group / 2 - gap / 2 + 4, _shorten(row["label"], 22), "end", "oz-rowlabel"))
        for j, s in enumerate(series):
            value = row["values"][j]
            y = y0 + j * per_bar
            if value is None:
                body.append(_text(zero + 4, y + per_bar - 4, "no data", "start", "oz-muted"))
                continue
            w = abs(value) / scale * half
            x = zero - w if value < 0 else zero
            body.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0.5):.1f}" height="{per_bar - 3}" fill="{s["color"]}">'
                        f"<title>{escape(row['label'])}: {escape(s['name'])} {escape(fmt(value))}</title></rect>")
            tx = x - 4 if value < 0 else x + w + 4
            body.append(_text(tx, y + per_bar - 5, fmt(value), "end" if value < 0 else "start"))
    axis_y = height - 8
    if diverging:
        body += [_text(zero - half, axis_y, fmt(-scale), "start"), _text(zero, axis_y, "0"), _text(right, axis_y, fmt(scale), "end")]
    else:
        body += [_text(left, axis_y, "0", "start"), _text(right, axis_y, fmt(scale), "end")]
    return _svg(chart_id, title, desc, WIDTH, height, body)


def heatmap(*, chart_id: str, title: str, desc: str, rows: Sequence[str], cols: Sequence[str],
            values: Sequence[Sequence[float | None]], color: Callable[[float], str],
            fmt: Callable[[float], str] = number, label_width: int = 120, width: int = WIDTH) -> SafeString:
    """Rows × columns of cells coloured by `color(value)`; an empty cell (None) is hatched grey."""
    cell_h = 26
    total_width = width
    left, right, top = label_width, width - PAD_RIGHT, 8
    width = (right - left) / max(1, len(cols))
    height = top + cell_h * len(rows) + 30
    max_labels = MAX_X_LABELS * total_width // WIDTH
    body = []
    for i, name in enumerate(rows):
        y = top + i * cell_h
        body.append(_text(left - 8, y + cell_h / 2 + 4, _shorten(name, 18), "end", "oz-rowlabel"))
        for j, col in enumerate(cols):
            value = values[i][j]
            x = left + j * width
            fill = color(value) if value is not None else f"url(#{chart_id}-nodata)"
            what = f"{name}, {col}: {fmt(value)}" if value is not None else f"{name}, {col}: no report"
            body.append(f'<rect x="{x:.2f}" y="{y}" width="{max(width - 1, 0.5):.2f}" height="{cell_h - 2}" fill="{fill}">'
                        f"<title>{escape(what)}</title></rect>")
    body.insert(0, f'<defs><pattern id="{chart_id}-nodata" width="6" height="6" patternUnits="userSpaceOnUse" '
                   'patternTransform="rotate(45)"><rect width="6" height="6" fill="#eeeeee"/>'
                   '<line x1="0" y1="0" x2="0" y2="6" stroke="#d4d4d4" stroke-width="2"/></pattern></defs>')
    centres = [left + j * width + width / 2 for j in range(len(cols))]
    body += _x_labels(cols, centres, top + cell_h * len(rows) + 18, max_labels=max_labels)
    return _svg(chart_id, title, desc, total_width, height, body)


def _shorten(text: str, limit: int) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
