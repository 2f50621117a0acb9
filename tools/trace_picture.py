"""A picture of a ``tpwire journal trace`` file (docs/journal.md "Timeline"): one row per rank,
each slice a bar, each instant event a marker, each flow a line from the send to the receive;
where the trace holds a first divergence, a second panel zooms in around it.

    python -m tools.trace_picture TRACE.json -o docs/journal-trace.png

Needs matplotlib (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

#: bar colours by slice category and direction
_BAR = {"send": "#1f77b4", "recv": "#2ca02c", "observe": "#c7c7c7"}
#: marker and colour by instant category
_MARK = {
    "divergence": ("*", "#d62728", 16),
    "poison": ("X", "#ff7f0e", 10),
    "watchdog": ("X", "#9467bd", 10),
    "terminated": ("X", "#8c564b", 10),
    "end": ("|", "#000000", 14),
    "refusal": ("D", "#e377c2", 8),
    "problem": ("v", "#7f7f7f", 10),
}


def _rows(events: list[dict[str, Any]]) -> dict[tuple[int, int], str]:
    """Each track's row label, in the trace's order (process, then rank)."""
    names = {e["pid"]: e["args"]["name"] for e in events if e["name"] == "process_name"}
    # the track's own name ("rank 1", or "rank 1 (peer 0)" for a point-to-point end)
    threads = {
        (e["pid"], e["tid"]): e["args"]["name"] for e in events if e["name"] == "thread_name"
    }
    tracks = sorted({(e["pid"], e["tid"]) for e in events})
    many = len(names) > 1
    return {
        t: (f"{names.get(t[0], t[0])} " if many else "") + threads.get(t, f"rank {t[1]}")
        for t in tracks
    }


def _draw(ax: Any, events: list[dict[str, Any]], row: dict[tuple[int, int], int]) -> None:
    """Slices, flows and instants of ``events`` on ``ax`` (x in milliseconds)."""
    flows: dict[int, list[tuple[float, int]]] = {}
    for e in events:
        y = row[(e["pid"], e["tid"])]
        ts = e.get("ts", 0) / 1000
        if e["ph"] == "X":
            kind = e["args"].get("dir", e["cat"]) if e["cat"] == "envelope" else e["cat"]
            ax.broken_barh(
                [(ts, e["dur"] / 1000)], (y - 0.3, 0.6), facecolors=_BAR.get(kind, "#bcbd22")
            )
        elif e["ph"] in "sf":
            flows.setdefault(e["id"], []).append((ts, y))
    for ends in flows.values():
        if len(ends) == 2:
            (x0, y0), (x1, y1) = ends
            ax.plot([x0, x1], [y0, y1], color="#999999", linewidth=0.4, alpha=0.6, zorder=1)
    for e in events:
        if e["ph"] == "i":
            marker, color, size = _MARK.get(e["cat"], ("o", "#17becf", 8))
            y = row[(e["pid"], e["tid"])]
            ax.plot([e["ts"] / 1000], [y], marker=marker, color=color, markersize=size, zorder=3)
            if e["cat"] in ("divergence", "poison", "watchdog", "problem"):
                ax.annotate(
                    e["name"], (e["ts"] / 1000, y), textcoords="offset points",
                    xytext=(4, 8), fontsize=7, color=color,
                )  # fmt: skip


def picture(doc: dict[str, Any], out: Path, title: str | None = None) -> None:
    """Draw ``doc`` (a trace-event document) to the image ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    events = doc["traceEvents"]
    labels = _rows(events)
    row = {t: i for i, t in enumerate(labels)}
    div = [e for e in events if e.get("cat") == "divergence"]
    panels = 2 if div else 1
    fig, axes = plt.subplots(panels, 1, figsize=(11, 1.2 + 1.1 * len(row) * panels), squeeze=False)
    for k in range(panels):
        ax = axes[k][0]
        _draw(ax, events, row)
        ax.set_yticks(range(len(row)), list(labels.values()))
        ax.set_ylim(len(row) - 0.4, -0.6)
        ax.set_xlabel("ms from the first record")
        ax.grid(axis="x", linewidth=0.3)
    if div:
        at = div[0]["ts"] / 1000
        span = max(e["ts"] + e.get("dur", 0) for e in events if e["ph"] != "M") / 1000
        half = max(span / 30, 1.0)
        axes[1][0].set_xlim(at - half, at + half)
        axes[1][0].set_title(f"around the first divergence: {div[0]['args']['at']}", fontsize=9)
    legend = [Patch(color=c, label=k) for k, c in _BAR.items()]
    axes[0][0].legend(handles=legend, loc="upper right", fontsize=7, ncol=3)
    axes[0][0].set_title(title or "tpwire journal trace", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace", type=Path, help="a file `tpwire journal trace` wrote")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the image (.png)")
    parser.add_argument("--title", help="the picture's title")
    args = parser.parse_args(argv)
    try:
        doc = json.loads(args.trace.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        print(f"trace_picture: {args.trace}: {exc}", file=sys.stderr)
        return 2
    picture(doc, args.output, args.title)
    print(f"{args.output}: {len({(e['pid'], e['tid']) for e in doc['traceEvents']})} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
