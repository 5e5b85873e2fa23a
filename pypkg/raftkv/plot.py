"""Benchmark graphs as self-contained SVG, with no plotting library: throughput against
closed-loop clients, and latency percentiles against clients, one line per series.

``raftkv bench --plot out.svg`` and ``benchmarks/summarize.py`` draw with it. The x axis is
logarithmic in clients (1, 8, 64, 256 are evenly spaced); throughput starts at zero; latency is
logarithmic (p50 and p99 differ by orders of magnitude under load).

>>> series = [Series("raftkv put", [(1, 2000.0), (64, 26000.0)], "#1f77b4")]
>>> svg = benchmark_svg("demo", series, [Series("raftkv p99", [(1, 0.8), (64, 7.0)], "#1f77b4")])
>>> svg.startswith("<svg") and "raftkv put" in svg
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

__all__ = ["PALETTE", "Series", "benchmark_svg", "write_benchmark_svg"]

#: Colours for series, in order (colour-blind-safe, as matplotlib's default cycle).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")

_W, _H = 460, 300  # one panel
_ML, _MR, _MT, _MB = 64, 14, 34, 46  # margins: left, right, top, bottom


@dataclass
class Series:
    """One line: ``points`` are (clients, value); ``dashed`` draws it dashed (e.g. p50 beside
    a solid p99 of the same system)."""

    name: str
    points: list[tuple[float, float]]
    color: str = PALETTE[0]
    dashed: bool = False
    marker: str = field(default="circle")


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] on a linear axis."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    t = start
    while t <= hi + step * 0.5:
        ticks.append(round(t, 10))
        t += step
    return ticks


def _log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks per decade covering [lo, hi] on a log axis."""
    out = []
    for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            v = m * 10.0**e
            if lo / 1.0001 <= v <= hi * 1.0001:
                out.append(v)
    return out or [lo, hi]


def _fmt(v: float) -> str:
    if v >= 1_000_000:
        return f"{v / 1e6:g}M"
    if v >= 1000:
        return f"{v / 1000:g}k"
    return f"{v:g}"


def _panel(
    ox: float,
    title: str,
    ylabel: str,
    series: list[Series],
    log_y: bool,
    xs_all: list[float],
    xlabel: str = "closed-loop clients",
    xunit: str = "clients",
) -> list[str]:
    """One chart's SVG elements, its top-left corner at (ox, 0)."""
    out = [f'<g transform="translate({ox},0)">']
    pw, ph = _W - _ML - _MR, _H - _MT - _MB
    ys = [y for s in series for _, y in s.points if y > 0 or not log_y]
    xs = sorted(set(xs_all)) or [1.0]
    x_lo, x_hi = min(xs), max(xs)
    if x_lo == x_hi:
        x_lo, x_hi = x_lo / 2, x_hi * 2
    if log_y:
        y_lo = min(ys) / 1.5 if ys else 1.0
        y_hi = max(ys) * 1.5 if ys else 10.0
        yticks = _log_ticks(y_lo, y_hi)
    else:
        y_lo = 0.0
        y_hi = max(ys) * 1.1 if ys else 1.0
        yticks = _nice_ticks(0.0, y_hi)
        y_hi = max(y_hi, yticks[-1])

    def px(x: float) -> float:
        span = math.log(x_hi) - math.log(x_lo)
        return _ML + 10 + (pw - 20) * (math.log(x) - math.log(x_lo)) / span

    def py(y: float) -> float:
        if log_y:
            f = (math.log(max(y, y_lo)) - math.log(y_lo)) / (math.log(y_hi) - math.log(y_lo))
        else:
            f = (y - y_lo) / (y_hi - y_lo)
        return _MT + ph * (1 - f)

    out.append(
        f'<text x="{_ML + pw / 2}" y="20" text-anchor="middle" font-size="13" '
        f'font-weight="bold">{escape(title)}</text>'
    )
    out.append(f'<rect x="{_ML}" y="{_MT}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
    for t in yticks:
        y = py(t)
        out.append(f'<line x1="{_ML}" y1="{y:.1f}" x2="{_ML + pw}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(
            f'<text x="{_ML - 5}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{_fmt(t)}</text>'
        )
    for x in xs:
        X = px(x)
        out.append(f'<line x1="{X:.1f}" y1="{_MT}" x2="{X:.1f}" y2="{_MT + ph}" stroke="#eee"/>')
        out.append(
            f'<text x="{X:.1f}" y="{_MT + ph + 16}" text-anchor="middle" '
            f'font-size="11">{_fmt(x)}</text>'
        )
    out.append(
        f'<text x="{_ML + pw / 2}" y="{_H - 8}" text-anchor="middle" font-size="12">'
        f"{escape(xlabel)}</text>"
    )
    out.append(
        f'<text x="14" y="{_MT + ph / 2}" text-anchor="middle" font-size="12" '
        f'transform="rotate(-90 14 {_MT + ph / 2})">{escape(ylabel)}</text>'
    )
    for i, s in enumerate(series):
        pts = sorted((x, y) for x, y in s.points if x > 0 and (y > 0 or not log_y))
        if not pts:
            continue
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        out.append(
            f'<polyline class="series" data-name="{escape(s.name)}" points="{path}" '
            f'fill="none" stroke="{s.color}" stroke-width="2"{dash}/>'
        )
        for x, y in pts:
            shape = (
                f'<rect x="{px(x) - 3.5:.1f}" y="{py(y) - 3.5:.1f}" width="7" height="7"'
                if s.marker == "square"
                else f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5"'
            )
            out.append(
                f'{shape} fill="{s.color}"><title>{escape(s.name)}: {_fmt(x)} {escape(xunit)}, '
                f"{y:,.4g}</title>{'</rect>' if s.marker == 'square' else '</circle>'}"
            )
        ly = _MT + 14 + 15 * i
        lx = _ML + 10
        out.append(
            f'<line x1="{lx}" y1="{ly - 4}" x2="{lx + 18}" y2="{ly - 4}" stroke="{s.color}" '
            f'stroke-width="2"{dash}/>'
        )
        out.append(
            f'<rect x="{lx + 6}" y="{ly - 7.5}" width="7" height="7" fill="{s.color}"/>'
            if s.marker == "square"
            else f'<circle cx="{lx + 9}" cy="{ly - 4}" r="3" fill="{s.color}"/>'
        )
        out.append(f'<text x="{lx + 23}" y="{ly}" font-size="11">{escape(s.name)}</text>')
    out.append("</g>")
    return out


def benchmark_svg(
    title: str,
    throughput: list[Series],
    latency: list[Series],
    *,
    latency_label: str = "latency (ms)",
    throughput_label: str = "ops/s",
    x_label: str = "closed-loop clients",
    x_unit: str = "clients",
) -> str:
    """Two charts side by side: ``throughput`` (ops/s, linear from 0) and ``latency``
    (logarithmic), both against clients on a logarithmic axis; ``title`` above both.
    ``throughput_label``, ``x_label`` and ``x_unit`` (in the points' tooltips) rename the axes
    for other x values, e.g. MB/s against value size."""
    xs = [x for s in throughput + latency for x, _ in s.points]
    width, height = 2 * _W, _H + 24
    body = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="12" fill="#444">'
        f"{escape(title)}</text>",
        '<g transform="translate(0,24)">',
    ]
    body += _panel(0, "throughput", throughput_label, throughput, False, xs, x_label, x_unit)
    body += _panel(_W, "latency", latency_label, latency, True, xs, x_label, x_unit)
    body += ["</g>", "</svg>"]
    return "\n".join(body) + "\n"


def write_benchmark_svg(
    path: str, title: str, throughput: list[Series], latency: list[Series], **labels: str
) -> None:
    """Writes :func:`benchmark_svg` to ``path`` (``labels``: its keyword arguments)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(benchmark_svg(title, throughput, latency, **labels))
