"""Line plots for docs/results.md as plain SVG (no plotting dependency), from the JSON the benchmarks wrote.

    python benchmarks/plots.py        # docs/images/flagship_test_accuracy.svg, docs/images/pruning_accuracy.svg
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).parent
IMAGES = HERE.parent / "docs" / "images"
W, H, PAD = 560, 320, 56


COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea")


def svg_plot(points: list[tuple[float, float]], title: str, xlabel: str, ylabel: str, yfmt: str = "{:.0%}",
             xfmt: str = "{:g}") -> str:
    """One series as an SVG line chart with its points labelled, axes from the data's range."""
    return svg_lines({"": points}, title, xlabel, ylabel, yfmt, xfmt)


def svg_lines(series: dict[str, list[tuple[float, float]]], title: str, xlabel: str, ylabel: str,
              yfmt: str = "{:.0%}", xfmt: str = "{:g}") -> str:
    """Several named series in one SVG line chart (a legend when there are names; the points of a lone series are
    labelled with their values), axes from the data's range."""
    everything = [p for points in series.values() for p in points]
    xs, ys = sorted({p[0] for p in everything}), [p[1] for p in everything]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    y0, y1 = y0 - 0.05 * (y1 - y0 or 1), y1 + 0.05 * (y1 - y0 or 1)
    sx = lambda x: PAD + (x - x0) / ((x1 - x0) or 1) * (W - 2 * PAD)  # noqa: E731
    sy = lambda y: H - PAD - (y - y0) / ((y1 - y0) or 1) * (H - 2 * PAD)  # noqa: E731
    lines = ""
    for i, (name, points) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
        labels = len(series) == 1
        dots = "".join(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3"/>' + (
            f'<text x="{sx(x):.1f}" y="{sy(y) - 8:.1f}" text-anchor="middle">{yfmt.format(y)}</text>' if labels else "")
            for x, y in points)
        lines += (f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"/>'
                  f'<g fill="{colour}">{dots}</g>')
        if name:
            ly = PAD + 4 + 16 * i
            lines += (f'<line x1="{W - PAD - 190}" y1="{H - ly - 4}" x2="{W - PAD - 170}" y2="{H - ly - 4}" '
                      f'stroke="{colour}" stroke-width="2"/><text x="{W - PAD - 164}" y="{H - ly}">{name}</text>')
    yticks = "".join(f'<text x="{PAD - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{yfmt.format(y)}</text>'
                     for y in (min(ys), max(ys))) if len(series) > 1 else ""
    shown, xticks = [], ""
    for x in xs:  # a tick label too close to the one before is left out
        if not shown or sx(x) - sx(shown[-1]) >= 36:
            shown.append(x)
            xticks += f'<text x="{sx(x):.1f}" y="{H - PAD + 18}" text-anchor="middle">{xfmt.format(x)}</text>'

    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" '
            f'font-size="11"><rect width="100%" height="100%" fill="white"/>'
            f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>'
            f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="black"/>'
            f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}" stroke="black"/>'
            f'<text x="{W / 2}" y="{H - 14}" text-anchor="middle">{xlabel}</text>'
            f'<text x="16" y="{H / 2}" transform="rotate(-90 16 {H / 2})" text-anchor="middle">{ylabel}</text>'
            f'{xticks}{yticks}{lines}</svg>\n')


def main() -> int:
    IMAGES.mkdir(parents=True, exist_ok=True)
    tta = json.loads((HERE / "time_to_accuracy.json").read_text())
    points = [(round(e["train_s"] / 60, 1), e["test_acc_tta0"]) for e in tta["epochs"]]
    (IMAGES / "flagship_test_accuracy.svg").write_text(svg_plot(
        points, "Flagship: test accuracy after each epoch (430-step CPU run, no TTA)", "training minutes",
        "test accuracy"))
    pruning = json.loads((HERE / "pruning.json").read_text())
    points = [(r["sparsity"] * 100, r["test_acc"]) for r in pruning["rows"]]
    (IMAGES / "pruning_accuracy.svg").write_text(svg_plot(
        points, "Classic CNN: test accuracy after the same fine-tune, by sparsity", "weights pruned (%)",
        "test accuracy", yfmt="{:.1%}"))
    print(f"wrote {IMAGES / 'flagship_test_accuracy.svg'} and {IMAGES / 'pruning_accuracy.svg'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
