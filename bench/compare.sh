#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Compares the benchmark programs of two builds: runs each program of the old and the new build
# alternately (old, new, old, new, old, new), so that both see the same machine load, and prints
# the median time and the median of each counter of every benchmark side by side.
#
# Usage: bench/compare.sh OLD_BUILD_DIR NEW_BUILD_DIR [filter]
#   OLD_BUILD_DIR, NEW_BUILD_DIR  build directories whose bench/ holds the *_bench programs
#                                 (or directories holding the programs themselves)
#   filter                        a --benchmark_filter regex (default: every benchmark)
# Environment:
#   BENCHES     programs to run (default: small_graph_bench staged_bench nested_bench
#               fallback_bench dag_bench async_bench); one missing from a build is skipped
#   ROUNDS      old/new pairs per program (default 3)
#   OUT_DIR     where the JSON and the output of every run go (default: a new directory
#               under /tmp)
#   BENCH_ARGS  more arguments for every run, e.g. "--benchmark_min_time=0.2"
#
# Columns: the medians over the rounds (a benchmark's time is its real time per iteration),
# new/old (below 1: the new build is faster or the counter smaller), and the benchmark's target:
# target_<counter> on a counter's row, target_ns or target_ms on the time's row. Medians of
# three runs on a shared machine still move by several percent: read small differences as noise.
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
  sed -n '7,18p' "$0" >&2
  exit 2
fi
old_dir=$1
new_dir=$2
filter=${3:-}
benches=${BENCHES:-small_graph_bench staged_bench nested_bench fallback_bench dag_bench async_bench}
rounds=${ROUNDS:-3}
out_dir=${OUT_DIR:-$(mktemp -d /tmp/xcs-compare.XXXXXX)}
mkdir -p "$out_dir"
read -r -a extra_args <<<"${BENCH_ARGS:-}"

program() {  # program BUILD_DIR NAME: the path of the program, or nothing
  local p
  for p in "$1/bench/$2" "$1/$2"; do
    if [[ -x $p ]]; then
      echo "$p"
      return
    fi
  done
}

ran=()
for name in $benches; do
  old_prog=$(program "$old_dir" "$name")
  new_prog=$(program "$new_dir" "$name")
  if [[ -z $old_prog || -z $new_prog ]]; then
    echo "compare.sh: skipping $name: not in both $old_dir and $new_dir" >&2
    continue
  fi
  for ((r = 1; r <= rounds; ++r)); do
    for side in old new; do
      prog=$old_prog
      [[ $side == new ]] && prog=$new_prog
      echo "compare.sh: $name $side, round $r of $rounds" >&2
      args=(--benchmark_out="$out_dir/$name.$side.$r.json" --benchmark_out_format=json)
      [[ -n $filter ]] && args+=(--benchmark_filter="$filter")
      if ! "$prog" "${args[@]}" ${extra_args[@]+"${extra_args[@]}"} \
        >"$out_dir/$name.$side.$r.log" 2>&1; then
        echo "compare.sh: $prog exited with an error (round $r): $out_dir/$name.$side.$r.log" >&2
      fi
    done
  done
  ran+=("$name")
done

echo "JSON and output of every run: $out_dir" >&2
[[ ${#ran[@]} -gt 0 ]] || exit 1

python3 - "$out_dir" "$rounds" "${ran[@]}" <<'PY'
import json, os, statistics, sys

out_dir, rounds, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
# Fields of a Google Benchmark result that are not user counters.
standard = {"name", "family_index", "per_family_instance_index", "run_name", "run_type",
            "repetitions", "repetition_index", "threads", "iterations", "real_time",
            "cpu_time", "time_unit", "label", "error_occurred", "error_message",
            "aggregate_name", "aggregate_unit"}
to_ns = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}


def load(name, side):
    """name -> {"time": [ns...], "counters": {key: [...]}, "label", "error"} over the rounds."""
    runs = {}
    order = []
    for r in range(1, rounds + 1):
        path = os.path.join(out_dir, f"{name}.{side}.{r}.json")
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError):
            continue
        for b in data.get("benchmarks", []):
            if b.get("run_type", "iteration") != "iteration":
                continue
            key = b["name"]
            if key not in runs:
                runs[key] = {"time": [], "counters": {}, "label": "", "error": ""}
                order.append(key)
            e = runs[key]
            if b.get("error_occurred"):
                e["error"] = b.get("error_message", "error")
                continue
            e["time"].append(b["real_time"] * to_ns.get(b.get("time_unit", "ns"), 1.0))
            e["label"] = b.get("label", e["label"])
            for k, v in b.items():
                if k not in standard and isinstance(v, (int, float)):
                    e["counters"].setdefault(k, []).append(float(v))
    return runs, order


def human_ns(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if abs(ns) >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def num(v):
    return "-" if v is None else f"{v:.4g}"


def ratio(old, new):
    return f"{new / old:.3f}" if old not in (None, 0) and new is not None else "-"


def median(xs):
    return statistics.median(xs) if xs else None


for name in names:
    old, old_order = load(name, "old")
    new, new_order = load(name, "new")
    keys = old_order + [k for k in new_order if k not in old]
    if not keys:
        print(f"\n{name}: no results")
        continue
    width = max(40, max(len(k) for k in keys) + 2)
    print(f"\n{name} (medians of {rounds} runs each)")
    print(f"{'benchmark / counter':<{width}} {'old':>12} {'new':>12} {'new/old':>8} {'target':>10}")
    for k in keys:
        o, n = old.get(k), new.get(k)
        ot = median(o["time"]) if o else None
        nt = median(n["time"]) if n else None
        note = "  ".join(x for x in ((o or {}).get("error", ""), (n or {}).get("error", "")) if x)
        label = (n or o)["label"]
        # target_ns and target_ms are targets for the time itself.
        tc = (n or o)["counters"]
        tt = median(tc.get("target_ns", [])) or (median(tc.get("target_ms", [])) or 0) * 1e6
        print(f"{k:<{width}} {human_ns(ot) if ot is not None else '-':>12} "
              f"{human_ns(nt) if nt is not None else '-':>12} {ratio(ot, nt):>8} "
              f"{human_ns(tt) if tt else '':>10}"
              f"{'  ' + label if label else ''}{'  ' + note if note else ''}")
        counters = {}
        for side in (o, n):
            for c, v in (side or {}).get("counters", {}).items():
                counters.setdefault(c, None)
        for c in counters:
            if c.startswith("target_"):
                continue
            oc = median((o or {}).get("counters", {}).get(c, []))
            nc = median((n or {}).get("counters", {}).get(c, []))
            target = median(((n or o) or {}).get("counters", {}).get("target_" + c, []))
            print(f"{'  ' + c:<{width}} {num(oc):>12} {num(nc):>12} {ratio(oc, nc):>8} "
                  f"{num(target) if target is not None else '':>10}")
PY
