"""Figures made at build time as inline SVG, written directly (no plotting library: importing one cost about a
second per build, more than the rest of a small catalogue's pages).

Text, axes and grid are drawn in ``currentColor``, so a figure follows the page's light or dark theme; the background
is transparent; data colours come from the Okabe-Ito palette, legible on white and on material's dark slate. Every bar
and point carries a ``<title>`` (its values, shown on hover and read by screen readers).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from html import escape

from tools.catalogue.schema import Paper
from tools.outputs.site.model import SiteModel, first_version_date

PALETTE = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#999999"]
MARKERS = ["circle", "square", "triangle", "diamond", "triangle-down", "plus", "cross", "star"]

SPEEDUP_METRICS = (
    "prefill_speedup",
    "decode_speedup",
    "e2e_speedup",
    "encoding_speedup",
    "attention_speedup",
    "throughput_gain",
)


def nice_ticks(top: float, most: int = 6, whole: bool = False) -> list[float]:
    """Ticks 0, step, 2*step, ... covering ``top``, with step 1, 2 or 5 times a power of ten (at least 1 when
    ``whole``) and at most ``most`` ticks after 0."""
    top = max(float(top), 1e-9)
    for power in range(math.floor(math.log10(top / most)), math.floor(math.log10(top)) + 2):
        for base in (1, 2, 5):
            step = base * 10.0**power
            if (step >= 1 or not whole) and math.ceil(top / step - 1e-9) <= most:
                return [round(i * step, 10) for i in range(math.ceil(top / step - 1e-9) + 1)]
    return [0.0, top]


def _num(value: float) -> str:
    return f"{value:g}"


def _text(x: float, y: float, text: str, anchor: str = "middle", extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" fill="currentColor"{extra}>{escape(text)}</text>'


def _document(width: int, height: int, label: str, body: list[str]) -> str:
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{escape(label)}" class="atlas-plot-svg" font-family="sans-serif" font-size="12">',
            *body,
            "</svg>",
        ]
    )


def _y_axis(ticks: list[float], left: float, right: float, y_of, label: str, bottom: float, top: float) -> list[str]:
    """Horizontal grid lines with their labels, the axis line and the rotated axis title."""
    out = []
    for tick in ticks:
        y = y_of(tick)
        out.append(
            f'<line x1="{left:.1f}" y1="{y:.1f}" x2="{right:.1f}" y2="{y:.1f}" stroke="currentColor" '
            f'stroke-opacity="0.15"/>'
        )
        out.append(_text(left - 6, y + 4, _num(tick), "end"))
    out.append(f'<line x1="{left:.1f}" y1="{top:.1f}" x2="{left:.1f}" y2="{bottom:.1f}" stroke="currentColor"/>')
    out.append(f'<line x1="{left:.1f}" y1="{bottom:.1f}" x2="{right:.1f}" y2="{bottom:.1f}" stroke="currentColor"/>')
    middle = (top + bottom) / 2
    out.append(_text(16, middle, label, extra=f' transform="rotate(-90 16 {middle:.1f})"'))
    return out


def _marker(shape: str, x: float, y: float, colour: str, title: str, r: float = 5.0) -> str:
    style = f'fill="{colour}" stroke="currentColor" stroke-width="0.6"'
    if shape == "circle":
        element = f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" {style}>'
        return f"{element}<title>{escape(title)}</title></circle>"
    points = {
        "square": [(-1, -1), (1, -1), (1, 1), (-1, 1)],
        "triangle": [(0, -1.2), (1.1, 0.9), (-1.1, 0.9)],
        "triangle-down": [(0, 1.2), (1.1, -0.9), (-1.1, -0.9)],
        "diamond": [(0, -1.3), (1.1, 0), (0, 1.3), (-1.1, 0)],
        "plus": [
            (-0.35, -1.2),
            (0.35, -1.2),
            (0.35, -0.35),
            (1.2, -0.35),
            (1.2, 0.35),
            (0.35, 0.35),
            (0.35, 1.2),
            (-0.35, 1.2),
            (-0.35, 0.35),
            (-1.2, 0.35),
            (-1.2, -0.35),
            (-0.35, -0.35),
        ],
        "cross": [
            (-1, -1.25),
            (0, -0.25),
            (1, -1.25),
            (1.25, -1),
            (0.25, 0),
            (1.25, 1),
            (1, 1.25),
            (0, 0.25),
            (-1, 1.25),
            (-1.25, 1),
            (-0.25, 0),
            (-1.25, -1),
        ],
        "star": [
            (
                math.sin(i * math.pi / 5) * (1.3 if i % 2 == 0 else 0.55),
                -math.cos(i * math.pi / 5) * (1.3 if i % 2 == 0 else 0.55),
            )
            for i in range(10)
        ],
    }[shape]
    path = " ".join(f"{x + dx * r:.1f},{y + dy * r:.1f}" for dx, dy in points)
    return f'<polygon points="{path}" {style}><title>{escape(title)}</title></polygon>'


def _legend(entries: list[tuple[str, str, str]], x: float, y: float) -> list[str]:
    """One row per (name, colour, marker shape or "" for a swatch), from (x, y) down."""
    out = []
    for i, (name, colour, shape) in enumerate(entries):
        row = y + 18 * i
        if shape:
            out.append(_marker(shape, x + 6, row - 4, colour, name))
        else:
            out.append(f'<rect x="{x:.1f}" y="{row - 10:.1f}" width="12" height="12" fill="{colour}"/>')
        out.append(_text(x + 18, row, name, "start"))
    return out


def papers_per_quarter(model: SiteModel) -> tuple[str, dict]:
    """Stacked bars: papers per quarter of their first version, one colour per stage (a paper in two stages counts
    in both). Returns (svg, facts)."""
    counts: dict[str, Counter] = defaultdict(Counter)
    undated = 0
    for paper in model.papers.values():
        date = first_version_date(paper)
        if date is None:
            undated += 1
            continue
        for stage in sorted({c.split(".", 1)[0] for c in paper.placement.cells}):
            counts[stage][(date.year, (date.month - 1) // 3 + 1)] += 1
    quarters = sorted({q for c in counts.values() for q in c})
    if quarters:
        first, last = quarters[0], quarters[-1]
        quarters, (y, q) = [], first
        while (y, q) <= last:
            quarters.append((y, q))
            y, q = (y + 1, 1) if q == 4 else (y, q + 1)
    stages = model.taxonomy.stages
    totals = [sum(counts[stage.id][q] for stage in stages) for q in quarters]
    ticks = nice_ticks(max(totals, default=0) or 1, whole=True)
    width, height, left, right, top, bottom = 900, 380, 60, 884, 40 + 18 * len(stages), 310
    slot = (right - left) / max(len(quarters), 1)

    def y_of(value: float) -> float:
        return bottom - (bottom - top) * value / ticks[-1]

    body = _y_axis(ticks, left, right, y_of, "papers (first version)", bottom, top)
    for i, (year, q) in enumerate(quarters):
        stacked = 0
        for j, stage in enumerate(stages):
            value = counts[stage.id][(year, q)]
            if value:
                y0, y1 = y_of(stacked), y_of(stacked + value)
                body.append(
                    f'<rect x="{left + slot * (i + 0.075):.1f}" y="{y1:.1f}" width="{slot * 0.85:.1f}" '
                    f'height="{y0 - y1:.1f}" fill="{PALETTE[j % len(PALETTE)]}">'
                    f"<title>{year} Q{q}, {escape(stage.name)}: {value}</title></rect>"
                )
                stacked += value
    step = max(1, math.ceil(len(quarters) / 12))
    for i in range(0, len(quarters), step):
        x, (year, q) = left + slot * (i + 0.5), quarters[i]
        body.append(_text(x, bottom + 14, f"{year} Q{q}", "end", f' transform="rotate(-45 {x:.1f} {bottom + 14})"'))
    body += _legend([(stage.name, PALETTE[j % len(PALETTE)], "") for j, stage in enumerate(stages)], left + 8, 20)
    facts = {
        "quarters": len(quarters),
        "undated": undated,
        "rows": [(f"{y} Q{q}", [counts[s.id][(y, q)] for s in model.taxonomy.stages]) for y, q in quarters],
    }
    return _document(width, height, "Papers per quarter by stage", body), facts


def _retained_percent(paper: Paper) -> float | None:
    for claim in paper.claims:
        if claim.metric == "visual_tokens_retained" and claim.unit == "%":
            return float(claim.value)
    for claim in paper.claims:
        if claim.metric == "visual_tokens_pruned" and claim.unit == "%":
            return 100.0 - float(claim.value)
    return None


def speedup_points(model: SiteModel) -> list[dict]:
    """One point per paper that claims both a speedup (x) and a share of visual tokens retained (or pruned, in %):
    the paper's largest speedup claim against its first retained share."""
    points = []
    for pid in model.ordered_ids:
        paper = model.papers[pid]
        speedups = [c for c in paper.claims if c.metric in SPEEDUP_METRICS and c.unit == "x"]
        retained = _retained_percent(paper)
        if not speedups or retained is None:
            continue
        best = max(speedups, key=lambda c: c.value)
        points.append(
            {
                "id": pid,
                "technique": paper.placement.techniques[0],
                "retained": retained,
                "speedup": float(best.value),
                "metric": best.metric,
                "where": best.where,
            }
        )
    return points


def speedup_vs_retained(model: SiteModel) -> tuple[str, list[dict]]:
    """A scatter of :func:`speedup_points`: visual tokens retained (%) across, claimed speedup up, one colour and
    marker per technique. Returns (svg, points)."""
    points = speedup_points(model)
    techniques = sorted({p["technique"] for p in points})
    names = {t.id: t.name for t in model.taxonomy.techniques}
    style = {t: (PALETTE[i % len(PALETTE)], MARKERS[i % len(MARKERS)]) for i, t in enumerate(techniques)}
    y_ticks = nice_ticks(max((p["speedup"] for p in points), default=2))
    width, height, left, right, top, bottom = 760, 420, 60, 520, 20, 370

    def x_of(value: float) -> float:
        return left + (right - left) * value / 100

    def y_of(value: float) -> float:
        return bottom - (bottom - top) * value / y_ticks[-1]

    body = _y_axis(y_ticks, left, right, y_of, "claimed speedup (x)", bottom, top)
    for tick in range(0, 101, 20):
        x = x_of(tick)
        body.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="currentColor" stroke-opacity="0.15"/>'
        )
        body.append(_text(x, bottom + 16, str(tick)))
    body.append(_text((left + right) / 2, bottom + 38, "visual tokens retained (%)"))
    for p in points:
        colour, shape = style[p["technique"]]
        title = f"{p['id']}: {_num(p['speedup'])}x at {_num(p['retained'])}% retained"
        body.append(_marker(shape, x_of(p["retained"]), y_of(p["speedup"]), colour, title))
    if points:
        body += _legend([(names.get(t, t), *style[t]) for t in techniques], right + 24, top + 10)
    else:
        body.append(_text((left + right) / 2, (top + bottom) / 2, "no paper claims both figures yet"))
    return _document(width, height, "Claimed speedup against visual tokens retained, by technique", body), points


def _range_ticks(low: float, high: float, most: int = 6) -> list[float]:
    """Round ticks covering [low, high], starting at a multiple of the step at or below ``low`` (not always at 0:
    shares retained sit between 90 and 100)."""
    span = nice_ticks(max(high - low, 1e-9), most)
    step = span[1] - span[0] if len(span) > 1 else 1.0
    start = math.floor(low / step + 1e-9) * step
    ticks = [round(start + i * step, 10) for i in range(int(math.ceil((high - start) / step - 1e-9)) + 1)]
    return ticks if len(ticks) > 1 else [ticks[0], ticks[0] + step]


def setting_scatter(points: list[dict], x_label: str, y_label: str, label: str) -> str:
    """One comparable setting: each point is a claim (``x``: the budget kept, in %; ``y``: the claimed value;
    ``name``: the paper), one colour and marker per paper, a legend of the papers."""
    names = list(dict.fromkeys(p["name"] for p in points))
    style = {n: (PALETTE[i % len(PALETTE)], MARKERS[i % len(MARKERS)]) for i, n in enumerate(names)}
    ys = [p["y"] for p in points] or [0.0, 1.0]
    low = min(ys) if min(ys) > 0.5 * max(ys) else 0.0  # zoom in only when every value is far from zero
    y_ticks = _range_ticks(low, max(ys))
    width, height, left, right, top, bottom = 760, max(300, 40 + 18 * len(names)), 60, 520, 20, 250
    x_ticks = _range_ticks(0, max([p["x"] for p in points] + [10.0]))

    def x_of(value: float) -> float:
        return left + (right - left) * (value - x_ticks[0]) / (x_ticks[-1] - x_ticks[0])

    def y_of(value: float) -> float:
        return bottom - (bottom - top) * (value - y_ticks[0]) / (y_ticks[-1] - y_ticks[0])

    body = _y_axis(y_ticks, left, right, y_of, y_label, bottom, top)
    for tick in x_ticks:
        x = x_of(tick)
        body.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="currentColor" stroke-opacity="0.15"/>'
        )
        body.append(_text(x, bottom + 16, _num(tick)))
    body.append(_text((left + right) / 2, bottom + 38, x_label))
    for p in points:
        colour, shape = style[p["name"]]
        body.append(
            _marker(
                shape,
                x_of(p["x"]),
                y_of(p["y"]),
                colour,
                f"{p['name']}: {_num(round(p['y'], 2))} at {_num(round(p['x'], 1))}%",
            )
        )
    body += _legend([(n, *style[n]) for n in names], right + 24, top + 10)
    return _document(width, height, label, body)
