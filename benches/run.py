#!/usr/bin/env python3
"""berth against its peers: the same backend behind berth, nginx, haproxy and Envoy.

`benches/run.sh` installs the tools and builds berth, then runs this. Each scenario starts its
processes fresh on 127.0.0.1 (free ports), warms up, and is measured:

1. RSS of the proxy process(es) idle, then with 1,000 idle keep-alive client connections;
2. latency at a fixed rate, open loop with latency correction (oha -q RATE), and the proxy's
   CPU per request at that rate;
3. saturation throughput (closed loop, 64 connections) and requests per proxy CPU-second.

Every scenario runs once per round; the order rotates each round so no proxy always goes
first. The report shows medians over the rounds and ratios to nginx. Optionally (on by
default when valgrind is installed) callgrind counts instructions per request, a measure that
does not move with the machine's load.

Stdlib only. Every process started here is killed on exit, whatever the exit.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts

import callgrind as callgrind_module  # noqa: E402
import scenarios  # noqa: E402
from callgrind import callgrind  # noqa: E402
from growth import growth, report as growth_report  # noqa: E402
from load import completed, idle_connections, oha  # noqa: E402
from procs import PROCS, cpu_seconds, rss_mib  # noqa: E402
from scenarios import BERTH, ROOT, SCENARIOS, Running, envoy_binary  # noqa: E402

OUT = ROOT / "target" / "bench"


def measure(name: str, work: Path, args) -> dict:
    run = Running(url="")
    try:
        SCENARIOS[name](work, run)
        oha(run.url, args.warmup, 16, rate=args.rate // 2)  # warm pools, caches, allocators
        time.sleep(1)
        pids = run.proxy_pids
        result: dict = {}
        if pids:
            result["rss_idle_mib"] = rss_mib(pids)
            conns = idle_connections(run.url, args.idle_conns)
            time.sleep(1)
            result["rss_idle_conns_mib"] = rss_mib(pids)
            for s in conns:
                s.close()
            time.sleep(1)

        cpu0 = cpu_seconds(pids) if pids else 0.0
        fixed = oha(run.url, args.duration, 50, rate=args.rate)
        cpu = cpu_seconds(pids) - cpu0 if pids else 0.0
        ok, other = completed(fixed)
        lat = fixed["latencyPercentiles"]
        result.update(
            p50_ms=lat["p50"] * 1e3, p99_ms=lat["p99"] * 1e3, p999_ms=lat["p99.9"] * 1e3,
            rate_rps=fixed["summary"]["requestsPerSec"], rate_errors=other,
            cpu_us_per_req=cpu / ok * 1e6 if pids and ok else None,
        )

        cpu0 = cpu_seconds(pids) if pids else 0.0
        sat = oha(run.url, args.duration, 64)
        cpu = cpu_seconds(pids) - cpu0 if pids else 0.0
        ok, other = completed(sat)
        result.update(
            sat_rps=sat["summary"]["requestsPerSec"], sat_errors=other,
            req_per_cpu_s=ok / cpu if pids and cpu > 0 else None,
            sat_proxy_cores=cpu / args.duration if pids else None,
        )
        return result
    except Exception:
        for log in sorted(work.glob("*.log")):
            print(f"--- {log}:\n" + "".join(log.read_text(errors="replace").splitlines(True)[-20:]), file=sys.stderr)
        raise
    finally:
        run.stop_event.set()
        PROCS.stop(run.procs)


# --------------------------------------------------------------------------- report


def version(argv: list[str]) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return (r.stdout + r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "not found"


def machine() -> dict:
    cpu = re.search(r"^model name\s*:\s*(.*)$", Path("/proc/cpuinfo").read_text(), re.M)
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": cpu.group(1) if cpu else "unknown",
        "kernel": platform.release(),
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
        "versions": {
            "berth": version([str(BERTH), "--version"]),
            "nginx": version(["nginx", "-v"]),
            "haproxy": version(["haproxy", "-v"]),
            "envoy": "envoy " + version([envoy_binary(), "--version"]).split("version: ")[-1],
            "oha": version(["oha", "--version"]),
            "rustc": version(["rustc", "--version"]),
        },
    }


def ratio(value, base) -> str:
    return f"{value / base:.2f}×" if value is not None and base else "—"


def num(value, fmt: str) -> str:
    return format(value, fmt) if value is not None else "—"


def report(rounds: list[dict], info: dict, args, cg: dict[str, float]) -> str:
    names = list(SCENARIOS)

    def med(name: str, key: str):
        values = [r[name][key] for r in rounds if r.get(name, {}).get(key) is not None]
        return statistics.median(values) if values else None

    lines = [
        f"date {info['date']}; {info['nproc']} CPUs ({info['cpu']}); kernel {info['kernel']}; "
        f"load average at start {' '.join(info['loadavg_start'])}, at end {' '.join(info['loadavg_end'])}",
        "; ".join(info["versions"].values()),
        f"{len(rounds)} rounds, order rotated each round; medians. Fixed rate {args.rate} req/s over 50 "
        f"connections for {args.duration:g} s (open loop, latency-corrected); saturation: 64 "
        f"connections for {args.duration:g} s.",
        "",
        "Latency at the fixed rate, added to direct (ms), and its ratio to nginx's added latency:",
        "",
        "| scenario | p50 | p99 | p99.9 | added p50 | ×nginx | added p99 | ×nginx | added p99.9 | ×nginx | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    added = {n: {k: (med(n, k) - med("direct", k)) for k in ("p50_ms", "p99_ms", "p999_ms")} for n in names}
    for n in names:
        a, b = added[n], added["nginx"]
        cells = [num(med(n, k), ".3f") for k in ("p50_ms", "p99_ms", "p999_ms")]
        for k in ("p50_ms", "p99_ms", "p999_ms"):
            cells += [f"{a[k]:+.3f}", ratio(a[k], b[k]) if n != "direct" and b[k] > 0 else "—"]
        errors = sum(r.get(n, {}).get("rate_errors", 0) for r in rounds)
        lines.append(f"| {n} | {' | '.join(cells)} | {errors} |")
    lines += [
        "",
        "Throughput and resources of the proxy process(es) (both sidecars in berth-full, both Envoys in envoy-full); "
        "KiB per idle conn is (RSS with the idle connections - RSS idle) / their number:",
        "",
        "| scenario | saturation req/s | ×nginx | req per CPU-s | ×nginx | CPU µs/req at fixed rate | ×nginx "
        f"| RSS idle MiB | ×nginx | RSS with {args.idle_conns} idle conns MiB | ×nginx | KiB per idle conn "
        "| ×nginx | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def per_conn(name: str):
        # (RSS with N idle connections - RSS idle) / N, from the medians.
        idle, conns = med(name, "rss_idle_mib"), med(name, "rss_idle_conns_mib")
        return (conns - idle) * 1024 / args.idle_conns if idle is not None and conns is not None else None

    for n in names:
        cells = []
        for key, fmt in (("sat_rps", ".0f"), ("req_per_cpu_s", ".0f"), ("cpu_us_per_req", ".1f"),
                         ("rss_idle_mib", ".1f"), ("rss_idle_conns_mib", ".1f")):
            cells += [num(med(n, key), fmt), ratio(med(n, key), med("nginx", key))]
        cells += [num(per_conn(n), ".2f"), ratio(per_conn(n), per_conn("nginx"))]
        errors = sum(r.get(n, {}).get("sat_errors", 0) for r in rounds)
        lines.append(f"| {n} | {' | '.join(cells)} | {errors} |")
    if cg:
        lines += ["", "Instructions per request under callgrind (one process, one keep-alive connection):", "",
                  "| proxy | instructions/request | ×nginx |", "|---|---:|---:|"]
        lines += [f"| {k} | {v:,.0f} | {ratio(v, cg.get('nginx'))} |" for k, v in cg.items()]
    return "\n".join(lines) + "\n"


def run_growth(args) -> int:
    """`--growth`: the growth set alone, its own result files."""
    info = machine()
    work_root = OUT / "work-growth"
    shutil.rmtree(work_root, ignore_errors=True)
    started = time.monotonic()
    try:
        g = growth(work_root, args)
    finally:
        PROCS.stop_all()
    loadavg = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    text = (f"date {info['date']}; {info['nproc']} CPUs ({info['cpu']}); load average at start "
            f"{' '.join(info['loadavg_start'])}, at end {loadavg}; {info['versions']['berth']}\n\n"
            + growth_report(g))
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    (OUT / f"growth-{stamp}.json").write_text(json.dumps({"machine": info, "args": vars(args), "growth": g}, indent=1))
    (OUT / f"growth-{stamp}.md").write_text(text)
    print()
    print(text)
    print(f"(raw numbers: {OUT}/growth-{stamp}.json; {round(time.monotonic() - started)} s)")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate", type=int, default=2000, help="fixed rate for the latency run (req/s)")
    ap.add_argument("--duration", type=float, default=10, help="seconds per load run")
    ap.add_argument("--warmup", type=float, default=2, help="seconds of warm-up load per scenario")
    ap.add_argument("--idle-conns", type=int, default=1000)
    ap.add_argument("--callgrind-requests", type=int, default=2000, help="0 to skip callgrind")
    ap.add_argument("--before", metavar="BERTH",
                    help="another berth binary (an earlier build): its sidecars run every berth scenario "
                         "again, as <scenario>-before, in the same rounds and under callgrind")
    ap.add_argument("--only", help="comma-separated scenarios (direct and nginx are always kept)")
    ap.add_argument("--growth", action="store_true",
                    help="instead of the scenarios: how cost grows (idle connections, followed services, policy rules)")
    ap.add_argument("--growth-conns", type=int, default=10_000, help="idle connections for --growth")
    ap.add_argument("--growth-services", type=int, default=1000, help="followed services for --growth")
    ap.add_argument("--growth-instances", type=int, default=10_000, help="instances over all services for --growth")
    ap.add_argument("--growth-rules", type=int, default=100, help="policy rules for --growth")
    args = ap.parse_args()

    if args.only:
        keep = {"direct", "nginx", *args.only.split(",")}
        for n in list(SCENARIOS):
            if n not in keep:
                del SCENARIOS[n]
    if args.before:
        before = Path(args.before).resolve()
        if not before.is_file():
            ap.error(f"--before {args.before}: no such file")
        added = scenarios.add_before(before)
        callgrind_module.BEFORE = before
        callgrind_module.CALLGRIND[2:2] = ["berth-inbound-before", "berth-outbound-before"]
        print(f"--before {before}: also " + ", ".join(added), flush=True)
    # The idle connections (10,000 with --growth) plus the proxies' own: children inherit this
    # soft limit, raised as far as the hard limit allows (up to 65,536).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536, hard))
    # A TERM or HUP (run.sh's trap, a closed terminal) unwinds through the finally below.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    if args.growth:
        return run_growth(args)

    info = machine()
    # Configs, logs and registries of every run, kept for a look afterwards.
    work_root = OUT / "work"
    shutil.rmtree(work_root, ignore_errors=True)
    work_root.mkdir(parents=True)
    rounds: list[dict] = []
    cg: dict[str, float] = {}
    started = time.monotonic()
    try:
        names = list(SCENARIOS)
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            rounds.append({})
            for name in order:
                work = work_root / f"{r}-{name}"
                work.mkdir()
                t = time.monotonic()
                rounds[-1][name] = measure(name, work, args)
                print(f"round {r + 1}/{args.rounds} {name:15} {time.monotonic() - t:5.1f} s  "
                      + json.dumps({k: round(v, 3) if isinstance(v, float) else v
                                    for k, v in rounds[-1][name].items()}), flush=True)
        if args.callgrind_requests and shutil.which("valgrind"):
            (work_root / "callgrind").mkdir()
            cg = callgrind(work_root / "callgrind", args.callgrind_requests)
            print("callgrind instructions/request: " + json.dumps({k: round(v) for k, v in cg.items()}), flush=True)
    finally:
        PROCS.stop_all()
    info["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    info["seconds"] = round(time.monotonic() - started)
    text = report(rounds, info, args, cg)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    (OUT / f"results-{stamp}.json").write_text(json.dumps(
        {"machine": info, "args": vars(args), "rounds": rounds, "callgrind": cg}, indent=1))
    (OUT / f"results-{stamp}.md").write_text(text)
    print()
    print(text)
    print(f"(raw numbers: {OUT}/results-{stamp}.json; {info['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
