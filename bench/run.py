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
# --only=case,case runs a subset, e.g. --only=durable,recovery
ONLY = next((a.split("=", 1)[1].split(",") for a in sys.argv
             if a.startswith("--only=")), None)
REPEATS = 3
BIN = os.path.join("build", "bench", "vigil_bench")
ERL = shutil.which("erl")
ERL_SCHEDULERS = 2
# Raw LMDB baselines of the durable case: puts of the same record bytes in
# 1000-record transactions (the physical limit); the five LMDB operations a
# journal agent does per envelope, 1000 envelopes per transaction; and one
# fsync per record. fsync-each runs at most 2000 records.
DURABLE_BASES = ["lmdb-raw", "lmdb-raw-ops", "fsync-each"]

DURABLE_BIN = os.path.join("build", "bench", "durable_bench")

# (case, params, n in quick mode, n in full mode, baselines)
CASES = [
    ("ping_pong", {}, 200_000, 1_000_000, None),
    ("counting", {"producers": 1}, 2_000_000, 10_000_000, None),
    ("counting", {"producers": 2}, 2_000_000, 10_000_000, None),
    ("spawn", {}, 50_000, 1_000_000, None),
    ("restart", {}, 10_000, 100_000, None),
    # Durable envelopes/s of a journal agent at writer batch sizes 1..1000,
    # every commit with sync=full, against raw LMDB.
    ("durable", {"batch": 1}, 500, 2_000, DURABLE_BASES),
    ("durable", {"batch": 10}, 5_000, 20_000, DURABLE_BASES),
    ("durable", {"batch": 100}, 50_000, 200_000, DURABLE_BASES),
    ("durable", {"batch": 1000}, 100_000, 500_000, DURABLE_BASES),
    # Node start on 100,000 journal agents' snapshots, against a raw scan.
    ("recovery", {}, 100_000, 100_000, ["lmdb-raw"]),
]


def run_cpp(case, impl, n, params):
    if case in ("durable", "recovery"):
        if impl == "fsync-each":
            n = min(n, 2000)
        cmd = [DURABLE_BIN, case, impl, str(n)]
        if "batch" in params:
            cmd.append(str(params["batch"]))
    else:
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
    if not ERL:
        print("bench: erl not found: the Erlang baselines are marked missing "
              "in the JSON (as root, bench/run installs erlang-base)",
              file=sys.stderr, flush=True)
    for case, params, quick_n, full_n, bases in CASES:
        if ONLY and case not in ONLY:
            continue
        n = quick_n if QUICK else full_n
        label = case + "".join(f" {k}={v}" for k, v in params.items())
        impls = {"vigil": []}
        erlang_missing = False
        if bases is None:
            impls["caf-raw"] = []
            if ERL:
                impls["erlang"] = []
            else:
                erlang_missing = True
        else:
            for b in bases:
                impls[b] = []
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
            # Times (ms) are better lower: the ratio is baseline/ours then.
            lower_better = unit == "ms"
            results.append({
                "name": case, "ours": ours, "baseline": base,
                "baseline_kind": kind, "unit": unit,
                "ratio": ((base / ours if ours else None) if lower_better
                          else (ours / base if base else None)),
                "params": dict(params, n=n, baseline_n=runs[0]["params"]["n"],
                               repeats=REPEATS,
                               **({"orientation": "baseline/ours"}
                                  if lower_better else {})),
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
        if erlang_missing:
            # Kept in the JSON as missing, so that a reader sees the gap
            # (main says so once on stderr).
            results.append({
                "name": case, "ours": ours, "baseline": None,
                "baseline_kind": "erlang", "unit": unit, "ratio": None,
                "missing": "erl not found; apt-get install erlang-base",
                "params": dict(params, n=n, repeats=REPEATS),
            })
    doc = {
        "machine": {"cores": os.cpu_count(), "caf_max_threads": 2,
                    "lmdb_sync": "full",
                    "caf_scheduler_policy": "sharing",
                    "erlang_schedulers": ERL_SCHEDULERS if ERL else None},
        "mode": "quick" if QUICK else "full",
        "results": results,
    }
    print(json.dumps(doc, indent=2))
    print(f"\n{'case':<26} {'baseline':<12} {'ours':>14} {'baseline':>14} "
          f"{'unit':<14} {'ratio':>6}", file=sys.stderr)
    for r in results:
        label = r["name"] + (f" p={r['params']['producers']}"
                             if "producers" in r["params"] else "") + (
                                 f" b={r['params']['batch']}"
                                 if "batch" in r["params"] else "")
        if r.get("missing"):
            print(f"{label:<26} {r['baseline_kind']:<12} {r['ours']:>14.1f} "
                  f"{'missing':>14} {r['unit']:<14} {'-':>6}", file=sys.stderr)
            continue
        print(f"{label:<26} {r['baseline_kind']:<12} {r['ours']:>14.1f} "
              f"{r['baseline']:>14.1f} {r['unit']:<14} {r['ratio']:>6.2f}",
              file=sys.stderr)


if __name__ == "__main__":
    main()
