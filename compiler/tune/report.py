"""`reidc tune --report DB`: per target and task, reidc-default vs tuned latency, trials, and the
task's share of end-to-end kernel time (latency x calls per run); a bar chart per target. Where
`reidc tune` re-measured a task's best record against the default in paired rounds, the figures
are those rounds' minima, and "tuned" is what compile applies (the default where it lost). Then
per 3x3 conv shape the algorithms `reidc tune` timed (tune/algorithms.py), the one it chose and
what compile's policy would have built without the database."""
from __future__ import annotations

import io
from pathlib import Path

from reidc.compiler.base.atomic import atomic_write_bytes
from reidc.compiler.tunedb.database import existing_index, read_algorithms, read_tasks


def report_rows(root: str | Path) -> dict[str, list[dict]]:
    root = Path(root)
    index = existing_index(root, "--report")
    out = {}
    for key in sorted(index):
        rows = []
        for wk, t in read_tasks(root / key).items():
            default, best = t.get("default_s"), t.get("best_s")
            tuned = min(x for x in (default, best) if x) if (default or best) else None
            c = t.get("confirmed")
            paired = bool(c and c["trials"] == t.get("trials") and c["rounds"])
            if c and c["trials"] == t.get("trials"):   # the paired re-measure's figures, and what it kept
                default = c["default_s"]
                tuned = c["tuned_s"] if c["keep"] == "tuned" else default
            rows.append({"task": t.get("name", wk), "calls": t.get("weight", 1), "batch": t.get("batch"),
                         "trials": t.get("trials", 0), "failed": t.get("failed", 0), "paired": paired,
                         "kept": c["keep"] if c and c["trials"] == t.get("trials") else None,
                         "default_ms": default * 1e3 if default else None, "tuned_ms": tuned * 1e3 if tuned else None})
        total = sum(r["calls"] * r["tuned_ms"] for r in rows if r["tuned_ms"])
        total_default = sum(r["calls"] * r["default_ms"] for r in rows if r["default_ms"])
        for r in rows:
            r["share"] = r["calls"] * r["tuned_ms"] / total if r["tuned_ms"] and total else None
            r["speedup"] = r["default_ms"] / r["tuned_ms"] if r["default_ms"] and r["tuned_ms"] else None
        rows.sort(key=lambda r: -(r["share"] or 0))
        out[key] = {"preset": index[key]["preset"], "rows": rows, "total_ms": total, "total_default_ms": total_default,
                    "algorithms": algorithm_rows(read_algorithms(root / key))}
    return out


def algorithm_rows(table: dict) -> list[dict]:
    """Per batch and 3x3 conv shape: each algorithm's ms, the one measured fastest, what
    compile's default policy (`--winograd-tiles auto`) would build, and the chosen one's
    speedup over it (the per-kernel gain the measurement buys)."""
    from reidc.compiler.passes.choose_winograd import policy
    rows = []
    for batch, per in sorted(table.items(), key=lambda kv: int(kv[0])):
        for sig, e in per.items():
            ms = {a: (t * 1e3 if t is not None else None) for a, t in e.items() if a != "chosen"}
            default = policy(sig)
            gain = ms[default] / ms[e["chosen"]] if ms.get(default) and ms.get(e["chosen"]) else None
            rows.append({"batch": int(batch), "conv": sig, "ms": ms, "chosen": e["chosen"], "policy": default,
                         "speedup": gain})
    return rows


def plot(key: str, data: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in data["rows"] if r["default_ms"] and r["tuned_ms"]][:30]
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(rows) + 1.5))
    y = range(len(rows))
    ax.barh([i + 0.2 for i in y], [r["default_ms"] * r["calls"] for r in rows], 0.4, label="reidc default")
    ax.barh([i - 0.2 for i in y], [r["tuned_ms"] * r["calls"] for r in rows], 0.4, label="tuned")
    ax.set_yticks(list(y), [f"{r['task'][:48]} ({r['trials']} trials, {100 * (r['share'] or 0):.0f}%)" for r in rows],
                  fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("ms per run (latency x calls)")
    ax.set_title(f"{key}: kernels {data['total_default_ms']:.2f} ms default -> {data['total_ms']:.2f} ms tuned")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
