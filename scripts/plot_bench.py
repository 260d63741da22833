#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Plots the Google Benchmark JSON files of `make bench` into docs/img/benchmarks.png.
"""Usage: scripts/plot_bench.py [JSON_DIR] [OUT]

JSON_DIR  directory holding the `<name>_bench.json` files (default: build-bench, where
          `make bench` writes them; docs/bench-results holds the run quoted in
          docs/benchmarks.md).
OUT       output image (default: docs/img/benchmarks.png; the extension picks the format,
          e.g. .svg).

Needs matplotlib (Debian: python3-matplotlib; run it with /usr/bin/python3 if another
python3 comes first on PATH).
"""
import glob
import json
import os
import sys

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit("plot_bench.py: matplotlib is missing (apt-get install python3-matplotlib)")

COLORS = {"Serial": "#999999", "Async": "#c9a227", "TbbFlowGraph": "#3b75af",
          "TbbParallelFor": "#3b75af", "TbbLevels": "#7fa7d1", "Levels": "#b0b0b0",
          "Jit": "#d6452c", "Flattened": "#f0a08c"}
LABELS = {"Serial": "direct", "Async": "std::async", "TbbFlowGraph": "oneTBB flow graph",
          "TbbParallelFor": "tbb::parallel_for", "TbbLevels": "tbb::parallel_for per level",
          "Levels": "std::thread + barrier per level", "Jit": "xcs",
          "Flattened": "xcs flattened"}


def load(json_dir):
    """name -> benchmark entry (the last one of that name wins), and the run's context."""
    out, context = {}, {}
    paths = sorted(glob.glob(os.path.join(json_dir, "*_bench.json")))
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        context = context or data.get("context", {})
        for b in data.get("benchmarks", []):
            out[b["name"]] = b
    return out, context


def find(runs, prefix):
    """The entry whose name is `prefix` or starts with `prefix/` (names carry suffixes)."""
    for name, b in runs.items():
        if name == prefix or name.startswith(prefix + "/"):
            return b
    return None


def ns(b):
    """Real time per iteration in ns."""
    scale = {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9}[b.get("time_unit", "ns")]
    return b["real_time"] * scale


def fmt(v):
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def bars(ax, groups, systems, value, title, ylabel, log=False, ref=None, targets=None):
    """Grouped bars: one group per (label, key), one bar per system, value printed on top.

    `targets` is an optional list (one per group) of a target drawn as a short dashed line."""
    width = 0.8 / len(systems)
    for k, system in enumerate(systems):
        xs, ys = [], []
        for i, (_, key) in enumerate(groups):
            v = value(system, key)
            if v is not None:
                xs.append(i + (k - (len(systems) - 1) / 2) * width)
                ys.append(v)
        if not ys:
            continue
        rects = ax.bar(xs, ys, width, label=LABELS.get(system, system),
                       color=COLORS.get(system))
        for r, v in zip(rects, ys):
            ax.annotate(fmt(v), (r.get_x() + r.get_width() / 2, r.get_height()),
                        ha="center", va="bottom", fontsize=6.5, xytext=(0, 1),
                        textcoords="offset points")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([g[0] for g in groups], fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel, fontsize=8)
    if log:
        ax.set_yscale("log")
    if ref is not None:
        ax.axhline(ref, color="black", linewidth=0.8, linestyle="--")
    if targets:
        for i, t in enumerate(targets):
            if t is not None:
                ax.hlines(t, i - 0.45, i + 0.45, color="black", linewidth=1, linestyle="--",
                          label="target" if i == 0 else None)
    ax.margins(y=0.15)
    if log:
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo, hi * 8)  # room for the legend above the bars
    ax.legend(fontsize=7, ncol=2, loc="upper center")


def main():
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(__doc__)
        return
    json_dir = sys.argv[1] if len(sys.argv) > 1 else "build-bench"
    out = sys.argv[2] if len(sys.argv) > 2 else "docs/img/benchmarks.png"
    if not os.path.isdir(json_dir):
        sys.exit(f"plot_bench.py: {json_dir} is not a directory")
    runs, context = load(json_dir)
    if not runs:
        sys.exit(f"plot_bench.py: no *_bench.json in {json_dir}; run `make bench` first")

    fig, axes = plt.subplots(2, 3, figsize=(16, 9))

    # 1. Small graphs.
    def small(system, key):
        b = find(runs, f"BM_{system}_{key}/real_time")
        return ns(b) if b else None

    bars(axes[0][0], [("3 nodes", "Three"), ("7-node tree", "Tree7")],
         ["Serial", "Async", "TbbFlowGraph", "Jit"], small,
         "1. Cached call of a small graph", "ns per call (log)", log=True,
         targets=[1000, 2000])

    # 2. Fine-grained DAGs.
    shapes = [("fan-out\n4,000", "FanOut"), ("binary tree\n4,095", "BinaryTree"),
              ("wavefront\n48x48", "Wavefront"), ("layered\nrandom 4,000", "LayeredRandom")]

    def speedup(system, key):
        b = find(runs, f"BM_{system}_{key}/op_ns:2000")
        return b.get("speedup") if b else None

    bars(axes[0][1], shapes, ["Serial", "TbbFlowGraph", "Jit"], speedup,
         "2. Speedup over the direct call, 2 µs ops", "speedup (higher is better)", ref=1.0)
    axes[0][1].set_ylim(0, 2.3)

    def per_node(system, key):
        b = find(runs, f"BM_{system}_{key}/op_ns:0")
        return b.get("ns_per_node") if b else None

    bars(axes[1][0], shapes, ["Serial", "TbbFlowGraph", "Jit"], per_node,
         "2. Cost per node, trivial ops", "ns per node (log)", log=True)

    # 3. First call.
    ax = axes[0][2]
    sizes = [10, 100, 1000, 10000, 100000, 1000000]
    for system, label, counter, color in [
            ("Jit", "xcs first call (trace+compile+run)", "ns_per_node", COLORS["Jit"]),
            ("Compile", "trace+analyze+compile only", "ns_per_node", "#8c564b"),
            ("Jit", "xcs cached call, same graph", "cached_ns_per_node", "#f0a08c"),
            ("Serial", "direct call", "ns_per_node", COLORS["Serial"])]:
        pts = []
        for n in sizes:
            b = find(runs, f"BM_{system}_FirstCall/{n}")
            if b and counter in b:
                pts.append((n, b[counter]))
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label,
                    color=color)
    ax.axhline(2000, color="black", linewidth=0.8, linestyle="--", label="target 2 µs/node")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("nodes", fontsize=8)
    ax.set_ylabel("ns per node (log)", fontsize=8)
    ax.set_title("3. First call, per node, vs graph size", fontsize=10)
    ax.legend(fontsize=7)

    # 4. Blocking and CPU-bound ops.
    ax = axes[1][1]
    entries = [("direct", "BM_Serial_Sleep64", "Serial"),
               ("std::async", "BM_Async_Sleep64", "Async"),
               ("oneTBB\nflow graph", "BM_TbbFlowGraph_Sleep64", "TbbFlowGraph"),
               ("xcs\nfirst call", "BM_Jit_Sleep64FirstCall", "Jit"),
               ("xcs\ncached", "BM_Jit_Sleep64Cached", "Jit"),
               ("xcs\nhint", "BM_Jit_Sleep64Hint", "Jit")]
    xs, ys, cs, labels = [], [], [], []
    for i, (label, name, system) in enumerate(entries):
        b = find(runs, name)
        if b:
            xs.append(i)
            ys.append(ns(b) / 1e6)
            cs.append(COLORS[system])
            labels.append(label)
    rects = ax.bar(xs, ys, 0.7, color=cs)
    for r, v in zip(rects, ys):
        ax.annotate(fmt(v), (r.get_x() + r.get_width() / 2, r.get_height()), ha="center",
                    va="bottom", fontsize=6.5, xytext=(0, 1), textcoords="offset points")
    ax.set_xticks(xs)
    ax.set_xticklabels(labels, fontsize=7.5)
    ax.set_yscale("log")
    ax.margins(y=0.15)
    ax.axhline(30, color="black", linewidth=0.8, linestyle="--", label="target 30 ms")
    busy = {s: find(runs, f"BM_{s}_Busy8") for s in ("Serial", "Async", "TbbParallelFor", "Jit")}
    note = "8 x 25 ms CPU-bound, speedup:\n" + "\n".join(
        f"  {LABELS[s]}: {b['speedup']:.2f}x" for s, b in busy.items() if b and "speedup" in b)
    ax.text(0.98, 0.97, note, transform=ax.transAxes, ha="right", va="top", fontsize=7,
            bbox=dict(facecolor="white", edgecolor="#cccccc"))
    ax.set_ylabel("ms (log)", fontsize=8)
    ax.set_title("4. 64 x 20 ms sleep", fontsize=10)
    ax.legend(fontsize=7, loc="upper center")

    # 5 and 6. Nested graphs and varying durations, as ratios.
    ax = axes[1][2]
    groups, vals, cs = [], [], []
    for pool in (1, 2, 16):
        nested = find(runs, f"BM_Jit_Nested/{pool}")
        if nested and "vs_flattened" in nested:
            groups.append(f"nested/flat\npool {pool}")
            vals.append(nested["vs_flattened"])
            cs.append(COLORS["Jit"])
    for system in ("Levels", "TbbLevels", "TbbFlowGraph", "Jit"):
        b = find(runs, f"BM_{system}_Durations")
        if b and "vs_bound" in b:
            groups.append("durations\n" + {"Levels": "barrier", "TbbLevels": "tbb levels",
                                           "TbbFlowGraph": "tbb graph",
                                           "Jit": "xcs"}[system])
            vals.append(b["vs_bound"])
            cs.append(COLORS[system])
    rects = ax.bar(range(len(vals)), vals, 0.7, color=cs)
    for r, v in zip(rects, vals):
        ax.annotate(f"{v:.3f}", (r.get_x() + r.get_width() / 2, r.get_height()), ha="center",
                    va="bottom", fontsize=6.5, xytext=(0, 1), textcoords="offset points")
    ax.set_xticks(range(len(vals)))
    ax.set_xticklabels(groups, fontsize=7)
    n_nested = sum(1 for g in groups if g.startswith("nested"))
    if n_nested:
        ax.hlines(1.2, -0.4, n_nested - 0.6, color="black", linewidth=1, linestyle="--",
                  label="5. target: nested <= 1.2x flattened")
    if len(vals) > n_nested:
        ax.hlines(1.05, n_nested - 0.4, len(vals) - 0.6, color="#555555", linewidth=1,
                  linestyle=":", label="6. target: makespan <= 1.05x bound")
    ax.set_ylim(0, 1.45)
    ax.set_ylabel("ratio (lower is better)", fontsize=8)
    ax.set_title("5. Nested vs flattened   6. Makespan vs max(cp, work/cores)", fontsize=10)
    ax.legend(fontsize=7, loc="upper right")

    cpus = context.get("num_cpus", "?")
    date = context.get("date", "")[:16].replace("T", " ")
    fig.suptitle(f"xcs benchmarks, one run, {cpus} cores, {date} UTC "
                 f"(data: {os.path.normpath(json_dir)}; see docs/benchmarks.md)", fontsize=11)
    fig.tight_layout()
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
