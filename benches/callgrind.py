"""Instructions per request under callgrind: a measure that does not move with the machine's
load, for one process of each proxy."""

from __future__ import annotations

import http.client
import re
import subprocess
import time
from pathlib import Path

import scenarios
from procs import PROCS, free_port, http_ok, wait_until
from scenarios import (
    BERTH, BERTH_ENV, SERVICE, Running, haproxy_conf, nginx_argv, nginx_conf, sidecar_argv, start_app, write_instance,
)


CALLGRIND = ["berth-inbound", "berth-outbound", "hyper-floor", "nginx", "haproxy"]
# Another berth build to count beside this one (`run.py --before`): `<name>-before` targets.
BEFORE: Path | None = None
# The same hop done by hyper alone (proxy/examples/hyper_floor.rs): the floor berth stands on.
HYPER_FLOOR = BERTH.parent / "examples" / "hyper_floor"


def callgrind_target(name: str, work: Path, run: Running, app: int, port: int) -> tuple[list[str], dict]:
    """The command line of one proxy process listening on `port` in front of the app,
    configured as in its scenario but with one worker: callgrind follows only the process it
    starts, and runs its threads one at a time anyway."""
    registry = work / "registry"
    if name.endswith("-before") and BEFORE:
        saved, scenarios.SIDECAR = scenarios.SIDECAR, BEFORE
        try:
            return callgrind_target(name.removesuffix("-before"), work, run, app, port)
        finally:
            scenarios.SIDECAR = saved
    if name == "berth-inbound":
        return sidecar_argv(SERVICE, app, registry, port, free_port(), free_port()), BERTH_ENV
    if name == "berth-outbound":
        write_instance(registry, SERVICE, app, run.app_pid, run.stop_event)
        return sidecar_argv("bench-consumer", app, registry, free_port(), free_port(), port, SERVICE), BERTH_ENV
    if name == "hyper-floor":
        return [str(HYPER_FLOOR), f"127.0.0.1:{port}", f"127.0.0.1:{app}"], {}
    if name == "nginx":
        return nginx_argv(work, nginx_conf(work, app, port, workers=1)), {}
    return ["haproxy", "-db", "-f", str(haproxy_conf(work, app, port, threads=1))], {}


def instructions(pid: int, work: Path, during) -> int:
    """Instructions the process ran while `during()` ran: zero the counters, run, dump."""
    subprocess.run(["callgrind_control", "--zero", str(pid)], capture_output=True, check=True)
    during()
    before = set(work.glob(f"callgrind.out.{pid}*"))
    subprocess.run(["callgrind_control", "--dump", str(pid)], capture_output=True, check=True)
    dump = max(set(work.glob(f"callgrind.out.{pid}*")) - before, key=lambda f: f.stat().st_mtime)
    return int(re.search(r"^(?:summary|totals):\s+(\d+)", dump.read_text(), re.M).group(1))


def per_request(pid: int, work: Path, requests, n: int) -> float:
    """Instructions per request: the count over `requests(n)` minus the count over an idle
    window as long (timers, health checks, registry polls), divided by n."""
    start = time.monotonic()
    busy = instructions(pid, work, lambda: requests(n))
    took = time.monotonic() - start
    idle = instructions(pid, work, lambda: time.sleep(took))
    return (busy - idle) / n


def callgrind(work_root: Path, n: int) -> dict[str, float]:
    """Instructions per request of one proxy process under callgrind: the count over n
    sequential requests on one keep-alive connection, minus the count over an equally long
    idle window (timers, health checks, registry polls), divided by n. Valgrind runs code on
    one simulated CPU, so this does not move with the machine's load."""

    out: dict[str, float] = {}
    for name in CALLGRIND:
        work = work_root / name
        work.mkdir()
        run = Running(url="")
        try:
            app, port = start_app(work, run), free_port()
            argv, env = callgrind_target(name, work, run, app, port)
            vg = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={work}/callgrind.out.%p"]
            p = PROCS.start(vg + argv, work / f"{name}.log", env=env)
            run.procs.append(p)
            path = f"/{SERVICE}.stable/" if name.startswith("berth-outbound") else "/"
            wait_until(f"{name} under callgrind", lambda: http_ok(f"http://127.0.0.1:{port}{path}"), timeout=120)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

            def requests(count: int) -> None:
                for _ in range(count):
                    conn.request("GET", path)
                    conn.getresponse().read()

            requests(200)  # warm-up: the pooled upstream connection, lazily built state
            out[name] = per_request(p.pid, work, requests, n)
            conn.close()
        finally:
            run.stop_event.set()
            PROCS.stop(run.procs)
    return out
