"""Runs vigil_bench and the Erlang peers; prints one JSON document.

Every figure is a ratio against a baseline measured in the same invocation on
the same machine. Each case runs REPEATS times per implementation, and the
median is reported.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys

QUICK = "--quick" in sys.argv
REPEATS = 3
BIN = os.path.join("build", "bench", "vigil_bench")
ERL = shutil.which("erl")
ERL_SCHEDULERS = 2

# (case, params, cases' n in quick mode, n in full mode)
CASES = [
    ("ping_pong", {}, 200_000, 1_000_000),
    ("counting", {"producers": 1}, 2_000_000, 10_000_000),
    ("counting", {"producers": 2}, 2_000_000, 10_000_000),
    ("spawn", {}, 50_000, 1_000_000),
    ("restart", {}, 10_000, 100_000),
]


def run_cpp(case, impl, n, params):
    cmd = [BIN, case, impl, str(n)]
    if "producers" in params:
        cmd.append(str(params["producers"]))
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr.strip()}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_erlang(case, n, params):
    args = [f"n={n}"] + [f"{k}={v}" for k, v in params.items()]
    cmd = [ERL, f"+S", str(ERL_SCHEDULERS), "+P", "4000000", "-noshell",
           "-pa", "bench/erlang", "-s", "vigil_bench", "main", case,
           *args, "-s", "init", "stop"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr.strip()}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_of(runs, key):
    vals = [r["value"] if key == "value" else r["params"][key] for r in runs]
    return statistics.median(vals)


def main():
    results = []
    for case, params, quick_n, full_n in CASES:
        n = quick_n if QUICK else full_n
        label = case + "".join(f" {k}={v}" for k, v in params.items())
        impls = {"vigil": [], "caf-raw": []}
        if ERL:
            impls["erlang"] = []
        for i in range(REPEATS):
            for impl in impls:
                print(f"bench: {label} n={n} {impl} run {i + 1}/{REPEATS}",
                      file=sys.stderr, flush=True)
                if impl == "erlang":
                    impls[impl].append(run_erlang(case, n, params))
                else:
                    impls[impl].append(run_cpp(case, impl, n, params))
        unit = impls["vigil"][0]["unit"]
        ours = median_of(impls["vigil"], "value")
        for kind, runs in impls.items():
            if kind == "vigil":
                continue
            base = median_of(runs, "value")
            results.append({
                "name": case, "ours": ours, "baseline": base,
                "baseline_kind": kind, "unit": unit,
                "ratio": ours / base if base else None,
                "params": dict(params, n=n, repeats=REPEATS),
            })
            # Secondary figures, oriented so that higher is better.
            for key, sub_unit in (("p50_us", "us"), ("p99_us", "us"),
                                  ("bytes_per_agent", "bytes")):
                if key in impls["vigil"][0]["params"] and key in runs[0]["params"]:
                    o = median_of(impls["vigil"], key)
                    b = median_of(runs, key)
                    results.append({
                        "name": f"{case}.{key}", "ours": o, "baseline": b,
                        "baseline_kind": kind, "unit": sub_unit,
                        "ratio": b / o if o else None,
                        "params": dict(params, n=n, repeats=REPEATS,
                                       orientation="baseline/ours"),
                    })
    doc = {
        "machine": {"cores": os.cpu_count(), "caf_max_threads": 2,
                    "caf_scheduler_policy": "sharing",
                    "erlang_schedulers": ERL_SCHEDULERS if ERL else None},
        "mode": "quick" if QUICK else "full",
        "results": results,
    }
    print(json.dumps(doc, indent=2))
    print(f"\n{'case':<26} {'baseline':<8} {'ours':>14} {'baseline':>14} "
          f"{'unit':<14} {'ratio':>6}", file=sys.stderr)
    for r in results:
        label = r["name"] + (f" p={r['params']['producers']}"
                             if "producers" in r["params"] else "")
        print(f"{label:<26} {r['baseline_kind']:<8} {r['ours']:>14.1f} "
              f"{r['baseline']:>14.1f} {r['unit']:<14} {r['ratio']:>6.2f}",
              file=sys.stderr)


if __name__ == "__main__":
    main()
