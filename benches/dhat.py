#!/usr/bin/env python3
"""What berth keeps allocated per idle keep-alive connection, by allocation site.

Runs one sidecar (the profiling build: `cargo build --profile profiling`, release code with
symbols) under valgrind's DHAT, warms it up, opens N keep-alive connections that each send one
request and stay idle, closes them, and stops the sidecar. DHAT records every heap block's
allocation stack; at the heap's peak (`t-gmax`, when the N connections were open) the sites
holding about a block or more per connection are the per-connection ones. Prints those sites
with the bytes each holds per connection, and writes the DHAT file (viewable in valgrind's
dh_view.html).

    benches/dhat.py [--conns 1000] [--side inbound|outbound]
    benches/dhat.py --follow 1000     # per followed service instead (rnacos, 10 instances each)

With `--follow N` a consumer sidecar instead follows N services of 10 instances each in rnacos
(each with a policy document, so none is re-read every 500 ms), one first request to each,
and the sites holding about a block or more per service are shown, per service.

Stdlib only; everything on 127.0.0.1; every process it starts is killed when it ends.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import shutil
import signal
import sys
import time
import urllib.parse
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts

from load import idle_connections  # noqa: E402
from procs import PROCS, free_port, http_ok, wait_until  # noqa: E402
from growth import RNACOS, first_requests, register_many_nacos, start_rnacos  # noqa: E402
from scenarios import BERTH_ENV, ROOT, SERVICE, Running, sidecar_argv, start_app, write_instance  # noqa: E402

PROFILING = ROOT / "target" / "profiling" / "berth"
# Frames that only say "this allocates": the site is the first frame after them.
PLUMBING = re.compile(r"vgpreload|alloc\.rs|raw_vec|boxed\.rs|vec/mod\.rs|sync\.rs|unix\.rs|spec_extend|"
                      r"spec_from_elem|string\.rs|vec_deque|bytes_mut\.rs|bytes\.rs|convert/mod\.rs")


def frame_name(frame: str) -> str:
    """`0x1234: name<generics> (file:line)` to `name (file:line)`."""
    frame = re.sub(r"^0x[0-9A-F]+: ", "", frame)
    while True:
        shorter = re.sub(r"<[^<>]*>", "", frame)
        if shorter == frame:
            return frame
        frame = shorter


def site(frames: list[str]) -> str:
    """The frame that allocated and, when berth's own code is further up, berth's frame that
    led there (the caller that spawned the task, built the value)."""
    names = [frame_name(f) for f in frames]
    own = [i for i, n in enumerate(names) if not PLUMBING.search(n)] or [len(names) - 1]
    first = own[0]
    berth = next((i for i in own if "berth" in names[i]), None)
    if berth is None or berth == first:
        return names[first]
    return f"{names[first]} ← … ← {names[berth]}"


def per_connection_sites(dhat: dict, conns: int) -> tuple[list[dict], int]:
    """Sites holding about one live block or more per connection at t-gmax (at least 90% of
    `conns`), biggest first, and the heap's total bytes at t-gmax. Stacks are grouped by their
    site: one allocation inlined into two callers is two stacks to DHAT (hyper's 8 KiB write
    buffer is 892 + 108 blocks for 1,000 connections)."""
    ftbl = dhat["ftbl"]
    total = sum(pp["gb"] for pp in dhat["pps"])
    groups: dict[str, list[int]] = {}
    for pp in dhat["pps"]:
        if pp["gbk"]:
            g = groups.setdefault(site([ftbl[i] for i in pp["fs"]]), [0, 0])
            g[0] += pp["gb"]
            g[1] += pp["gbk"]
    out = [{"bytes_per_conn": b / conns, "blocks_per_conn": k / conns, "site": name}
           for name, (b, k) in groups.items() if k >= 0.9 * conns]
    out.sort(key=lambda s: -s["bytes_per_conn"])
    return out, total


def start_under_dhat(work: Path, run: Running, argv: list[str]):
    """The sidecar `argv` names, as the profiling build, under DHAT (its file in `work`)."""
    argv = [str(PROFILING), *argv[1:]]
    vg = ["valgrind", "--tool=dhat", f"--dhat-out-file={work}/dhat.out.%p"]
    p = PROCS.start(vg + argv, work / "sidecar.log", env=BERTH_ENV)
    run.procs.append(p)
    return p


def run_sidecar(work: Path, side: str, conns: int) -> Path:
    run = Running(url="")
    try:
        app, port = start_app(work, run), free_port()
        registry = work / "registry"
        if side == "inbound":
            argv = sidecar_argv(SERVICE, app, registry, port, free_port(), free_port())
            path = "/"
        else:
            write_instance(registry, SERVICE, app, run.app_pid, run.stop_event)
            argv = sidecar_argv("bench-consumer", app, registry, free_port(), free_port(), port, SERVICE)
            path = f"/{SERVICE}.stable/"
        p = start_under_dhat(work, run, argv)
        url = f"http://127.0.0.1:{port}{path}"
        wait_until("sidecar under dhat", lambda: http_ok(url), timeout=120)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(200):  # warm-up: pools and lazily built state exist before the peak
            conn.request("GET", path)
            conn.getresponse().read()
        conn.close()
        time.sleep(1)
        held = idle_connections(url, conns)
        time.sleep(3)  # idle: whatever a request left behind is freed or kept by now
        for s in held:
            s.close()
        time.sleep(2)
        p.send_signal(signal.SIGTERM)  # a clean exit, when DHAT writes its file
        p.wait(120)
        return next(work.glob(f"dhat.out.{p.pid}"))
    finally:
        run.stop_event.set()
        PROCS.stop(run.procs)


def follow_services(work: Path, services: int) -> Path:
    """A consumer sidecar under DHAT following `services` services in rnacos."""
    run = Running(url="")
    try:
        apps = [start_app(work, run) for _ in range(10)]
        http_port = start_rnacos(work, run)
        names = register_many_nacos(http_port, services, apps)
        publish_policies(http_port, names)
        port = free_port()
        argv = sidecar_argv("bench-consumer", apps[0], f"nacos://127.0.0.1:{http_port}", free_port(),
                            free_port(), port)
        p = start_under_dhat(work, run, argv)
        first = f"http://127.0.0.1:{port}/{names[0]}.stable/"
        wait_until("sidecar under dhat", lambda: http_ok(first), timeout=120)
        # Under valgrind a first instance set can come later than the sidecar waits for one
        # (503 registry-unavailable): ask again; services already followed answer at once.
        for attempt in range(5):
            try:
                first_requests(port, names, clients=8)
                break
            except RuntimeError:
                if attempt == 4:
                    raise
                time.sleep(5)
        time.sleep(3)
        p.send_signal(signal.SIGTERM)
        p.wait(300)
        return next(work.glob(f"dhat.out.{p.pid}"))
    finally:
        run.stop_event.set()
        PROCS.stop(run.procs)


def publish_policies(http_port: int, names: list[str]) -> None:
    """A minimal policy document for every service, through rnacos's HTTP config API."""
    doc = urllib.parse.quote(json.dumps({"schema": 1, "version": 1}))
    conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=30)
    for name in names:
        conn.request("POST", f"/nacos/v1/cs/configs?dataId=berth.traffic.{name}&group=BERTH&content={doc}")
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"rnacos refused the policy of {name}: {resp.status} {body[:200]!r}")
    conn.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--side", choices=("inbound", "outbound"), default="inbound")
    ap.add_argument("--follow", type=int, metavar="N", help="per followed service instead, N services")
    args = ap.parse_args()
    if not PROFILING.exists():
        print(f"{PROFILING} is missing: cargo build --profile profiling", file=sys.stderr)
        return 1
    if args.follow and not RNACOS.exists():
        print(f"--follow needs rnacos ({RNACOS})", file=sys.stderr)
        return 1
    # A TERM or HUP unwinds through the finally below, which stops every process started.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    what = "follow" if args.follow else args.side
    work = ROOT / "target" / "bench" / f"dhat-{what}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        out = follow_services(work, args.follow) if args.follow else run_sidecar(work, args.side, args.conns)
    finally:
        PROCS.stop_all()
    dhat = json.loads(out.read_text())
    count, unit = (args.follow, "service") if args.follow else (args.conns, "connection")
    sites, total = per_connection_sites(dhat, count)
    per_unit = sum(s["bytes_per_conn"] for s in sites)
    print(f"berth {what}, {count} {unit}s: heap at its peak {total / 1024:.0f} KiB; "
          f"{per_unit:,.0f} bytes per {unit} in {len(sites)} sites holding >= 0.9 blocks per {unit}")
    print()
    print(f"| bytes/{unit} | blocks/{unit} | allocated at |")
    print("|---:|---:|---|")
    for s in sites:
        print(f"| {s['bytes_per_conn']:,.0f} | {s['blocks_per_conn']:.1f} | {s['site']} |")
    print(f"\n(DHAT file: {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
