"""The search's plot: validation accuracy against latency; point size = weight memory."""
from __future__ import annotations

import io
from pathlib import Path

from reidc.compiler.base.atomic import atomic_write_bytes


def plot_pareto(result: dict, candidates, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    ax.scatter([c.predicted_ms for c in candidates], [c.score for c in candidates], s=12, c="lightgrey",
               label=f"evaluated ({len(candidates)}, predicted latency)")
    front = result["pareto_front"]
    ax.plot([r["predicted_ms"] for r in front], [r["val_score_mAP"] for r in front], "--", c="grey", lw=0.8,
            label="Pareto front (predicted)")
    meas = [r for r in front if r["measured_ms"] is not None]
    if meas:
        mb = [max(r["weight_bytes"] or 0, 1) / 2**20 for r in meas]
        ax.scatter([r["measured_ms"] for r in meas], [r["val_score_mAP"] for r in meas], s=[15 + 6 * m for m in mb],
                   c="tab:blue", alpha=0.7, label="Pareto front, measured (size = weight MB)")
        for r, m in zip(meas, mb):
            ax.annotate(f"{m:.1f} MB", (r["measured_ms"], r["val_score_mAP"]), fontsize=7, xytext=(4, 4),
                        textcoords="offset points")
    p = result["pick"]
    ax.scatter([p["measured_ms"]], [p["val_score_mAP"]], marker="*", s=250, c="tab:red", zorder=5,
               label=f"pick ({result['mode']})")
    if result.get("budget_ms"):
        ax.axvline(result["budget_ms"], c="tab:red", lw=0.8, ls=":", label=f"budget {result['budget_ms']} ms")
    ax.set_xlabel(f"latency, ms ({result['target']['target']}, {result['scenario']})")
    ax.set_ylabel("validation mAP")
    ax.set_title(f"reidc search, {result['mode']}: {result['dataset']}", fontsize=9)
    leg = ax.legend(fontsize=7, loc="lower right")
    for h in getattr(leg, "legend_handles", []):  # legend markers at one size, not the first point's
        if hasattr(h, "set_sizes"):
            h.set_sizes([40])
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, png.getvalue())
