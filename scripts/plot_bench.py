#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Plots the Google Benchmark JSON files of `make bench` (build-bench/*.json) into docs/img/.
"""Usage: scripts/plot_bench.py [JSON_DIR] [OUT_PNG]

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


def load(json_dir):
    """name -> benchmark entry (the last one of that name wins)."""
    out = {}
    for path in sorted(glob.glob(os.path.join(json_dir, "*_bench.json"))):
        with open(path) as f:
            for b in json.load(f).get("benchmarks", []):
                out[b["name"]] = b
    return out


def find(runs, prefix):
    """The entry whose name starts with `prefix` (names carry /min_time:... suffixes)."""
    for name, b in runs.items():
        if name == prefix or name.startswith(prefix + "/"):
            return b
    return None


def ns(b):
    """Real time per iteration in ns."""
    scale = {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9}[b.get("time_unit", "ns")]
    return b["real_time"] * scale


def bars(ax, groups, systems, value, title, ylabel, log=False, ref=None):
    width = 0.8 / len(systems)
    colors = {"Serial": "#999999", "Async": "#c9a227", "TbbFlowGraph": "#3b75af",
              "TbbParallelFor": "#3b75af", "Jit": "#d6452c"}
    for k, system in enumerate(systems):
        xs, ys = [], []
        for i, (label, key) in enumerate(groups):
            v = value(system, key)
            if v is not None:
                xs.append(i + (k - (len(systems) - 1) / 2) * width)
                ys.append(v)
        ax.bar(xs, ys, width, label=system, color=colors.get(system))
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([g[0] for g in groups], fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel, fontsize=8)
    if log:
        ax.set_yscale("log")
    if ref is not None:
        ax.axhline(ref, color="black", linewidth=0.8, linestyle="--")
    ax.legend(fontsize=7)


def main():
    json_dir = sys.argv[1] if len(sys.argv) > 1 else "build-bench"
    out = sys.argv[2] if len(sys.argv) > 2 else "docs/img/benchmarks.png"
    runs = load(json_dir)
    if not runs:
        sys.exit(f"plot_bench.py: no *_bench.json in {json_dir}; run `make bench` first")

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))

    def small(system, key):
        b = find(runs, f"BM_{system}_{key}/real_time")
        return ns(b) if b else None

    bars(axes[0][0], [("3 nodes", "Three"), ("7-node tree", "Tree7")],
         ["Serial", "TbbFlowGraph", "Jit"], small,
         "Cached call of a small graph (async: 80-230 us, off scale)", "ns per call", log=True)

    shapes = [("fan-out", "FanOut"), ("tree", "BinaryTree"), ("wavefront", "Wavefront"),
              ("layered", "LayeredRandom")]

    def speedup(system, key):
        b = find(runs, f"BM_{system}_{key}/op_ns:2000")
        return b.get("speedup") if b else None

    bars(axes[0][1], shapes, ["Serial", "TbbFlowGraph", "Jit"], speedup,
         "Speedup over the direct call, 2 us ops (2 cores)", "speedup", ref=1.0)

    def per_node(system, key):
        b = find(runs, f"BM_{system}_{key}/op_ns:0")
        return b.get("ns_per_node") if b else None

    bars(axes[1][0], shapes, ["Serial", "TbbFlowGraph", "Jit"], per_node,
         "Cost per node, trivial ops", "ns per node", log=True)

    ax = axes[1][1]
    for system, label, counter in [("Jit", "first call (trace+compile+run)", "ns_per_node"),
                                   ("Compile", "trace+analyze+compile only", "ns_per_node"),
                                   ("Jit", "cached call of the same graph",
                                    "cached_ns_per_node")]:
        pts = []
        for n in [10, 100, 1000, 10000, 100000, 1000000]:
            b = find(runs, f"BM_{system}_FirstCall/{n}")
            if b and counter in b:
                pts.append((n, b[counter]))
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.axhline(2000, color="black", linewidth=0.8, linestyle="--", label="target 2 us/node")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("nodes", fontsize=8)
    ax.set_ylabel("ns per node", fontsize=8)
    ax.set_title("First call per node vs graph size", fontsize=10)
    ax.legend(fontsize=7)

    fig.suptitle("xcs benchmarks (2-core shared VM; see docs/benchmarks.md)", fontsize=11)
    fig.tight_layout()
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
