"""Figures made at build time with matplotlib, as inline SVG that follows the page's light or dark theme.

Text, axes and grid are drawn in a sentinel colour that is replaced by ``currentColor``; the background is
transparent; data colours come from the Okabe-Ito palette, legible on white and on material's dark slate.
"""
from __future__ import annotations

import io
import re
from collections import Counter, defaultdict

from tools.schema import Paper
from tools.site.model import SiteModel, first_version_date

INK = "#010203"  # sentinel, becomes currentColor
PALETTE = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#999999"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]

SPEEDUP_METRICS = ("prefill_speedup", "decode_speedup", "e2e_speedup", "encoding_speedup", "attention_speedup",
                   "throughput_gain")


def _figure(figsize: tuple[float, float]):
    """A matplotlib Figure with the Atlas' style (the object API: importing pyplot alone costs about half a second)."""
    import matplotlib
    from matplotlib.figure import Figure

    matplotlib.rcParams.update({
        "svg.fonttype": "none", "font.family": "sans-serif", "font.size": 10,
        "text.color": INK, "axes.labelcolor": INK, "axes.edgecolor": INK, "xtick.color": INK, "ytick.color": INK,
        "axes.facecolor": "none", "figure.facecolor": "none", "savefig.transparent": True,
        "grid.color": INK, "grid.alpha": 0.15, "legend.frameon": False,
    })
    fig = Figure(figsize=figsize)
    return fig, fig.subplots()


def _svg(fig, salt: str, label: str) -> str:
    import matplotlib

    matplotlib.rcParams["svg.hashsalt"] = salt
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None}, bbox_inches="tight")
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = svg.replace(INK.lower(), "currentColor").replace(INK.upper(), "currentColor")
    svg = re.sub(r'<svg ([^>]*?)width="[^"]*" height="[^"]*"',
                 lambda m: f'<svg {m.group(1)}role="img" aria-label="{label}" class="atlas-plot-svg"', svg, count=1)
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    svg = re.sub(r"<defs>\s*<style[^>]*>.*?</style>\s*</defs>", "", svg, count=1, flags=re.S)  # a global * rule
    # Ids are unique per figure only: prefix them so that several figures can share a page.
    svg = re.sub(r'\bid="', f'id="{salt}-', svg)
    svg = svg.replace("url(#", f"url(#{salt}-").replace('href="#', f'href="#{salt}-')
    return "\n".join(line for line in svg.splitlines() if line.strip())


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
    fig, ax = _figure((9, 3.6))
    bottom = [0] * len(quarters)
    for i, stage in enumerate(model.taxonomy.stages):
        values = [counts[stage.id][q] for q in quarters]
        ax.bar(range(len(quarters)), values, bottom=bottom, color=PALETTE[i % len(PALETTE)], label=stage.name,
               width=0.85)
        bottom = [b + v for b, v in zip(bottom, values)]
    step = max(1, len(quarters) // 12)
    ax.set_xticks(range(0, len(quarters), step))
    ax.set_xticklabels([f"{y} Q{q}" for y, q in quarters[::step]], rotation=45, ha="right")
    ax.set_ylabel("papers (first version)")
    ax.grid(axis="y")
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(loc="upper left")
    facts = {"quarters": len(quarters), "undated": undated,
             "rows": [(f"{y} Q{q}", [counts[s.id][(y, q)] for s in model.taxonomy.stages]) for y, q in quarters]}
    return _svg(fig, "quarters", "Papers per quarter by stage"), facts


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
        points.append({"id": pid, "technique": paper.placement.techniques[0], "retained": retained,
                       "speedup": float(best.value), "metric": best.metric, "where": best.where})
    return points


def speedup_vs_retained(model: SiteModel) -> tuple[str, list[dict]]:
    points = speedup_points(model)
    fig, ax = _figure((7, 4.2))
    techniques = sorted({p["technique"] for p in points})
    for i, technique in enumerate(techniques):
        mine = [p for p in points if p["technique"] == technique]
        name = model.taxonomy.technique_by_id[technique].name if technique in model.taxonomy.technique_by_id else technique
        ax.scatter([p["retained"] for p in mine], [p["speedup"] for p in mine], label=name, s=36,
                   color=PALETTE[i % len(PALETTE)], marker=MARKERS[i % len(MARKERS)], edgecolors=INK, linewidths=0.4)
    if not points:
        ax.text(50, 1.5, "no paper claims both figures yet", ha="center", va="center")
    ax.set_xlim(0, 100)
    ax.set_xlabel("visual tokens retained (%)")
    ax.set_ylabel("claimed speedup (x)")
    ax.grid(True)
    ax.spines[["top", "right"]].set_visible(False)
    if points:
        ax.legend(loc="upper right", fontsize=8)
    return _svg(fig, "speedup", "Claimed speedup against visual tokens retained, by technique"), points
