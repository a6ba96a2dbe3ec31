"""Instructions per request under callgrind: a measure that does not move with the machine's
load, for one process of each proxy."""

from __future__ import annotations

import http.client
import re
import subprocess
import time
from pathlib import Path

from procs import PROCS, free_port, http_ok, wait_until
from scenarios import BERTH, SERVICE, Running, start_app, write_instance


CALLGRIND = ("berth-inbound", "berth-outbound", "nginx", "haproxy")


def callgrind_target(name: str, work: Path, run: Running, app: int, port: int) -> tuple[list[str], dict]:
    """The command line of one proxy process listening on `port` in front of the app, sized
    for callgrind: one process (callgrind follows the process it starts), one thread where
    configurable."""
    if name.startswith("berth"):
        registry = work / "registry"
        argv = [str(BERTH), "proxy", "--app-port", str(app), "--admin", f"127.0.0.1:{free_port()}",
                "--registry", f"dir://{registry}"]
        if name == "berth-inbound":
            argv += ["--service", SERVICE, "--inbound", f"127.0.0.1:{port}", "--outbound", f"127.0.0.1:{free_port()}"]
        else:
            write_instance(registry, SERVICE, app, run.app_pid, run.stop_event)
            argv += ["--service", "bench-consumer", "--services", SERVICE,
                     "--inbound", f"127.0.0.1:{free_port()}", "--outbound", f"127.0.0.1:{port}"]
        return argv, {"BERTH_LOG": "warn"}
    if name == "nginx":
        conf = work / "nginx.conf"
        conf.write_text(f"""
worker_processes 1; master_process off; daemon off; pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{ access_log off; keepalive_requests 1000000;
  upstream app {{ server 127.0.0.1:{app}; keepalive 16; }}
  server {{ listen 127.0.0.1:{port};
    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }} }} }}
""")
        return ["nginx", "-e", str(work / "nginx-error.log"), "-c", str(conf)], {}
    conf = work / "haproxy.cfg"
    conf.write_text(f"""
global
  nbthread 1
defaults
  mode http
  http-reuse always
  timeout connect 1s
  timeout client 75s
  timeout server 75s
frontend bench
  bind 127.0.0.1:{port}
  default_backend app
backend app
  server app 127.0.0.1:{app}
""")
    return ["haproxy", "-db", "-f", str(conf)], {}


def instructions(pid: int, work: Path, during) -> int:
    """Instructions the process ran while `during()` ran: zero the counters, run, dump."""
    subprocess.run(["callgrind_control", "--zero", str(pid)], capture_output=True, check=True)
    during()
    before = set(work.glob(f"callgrind.out.{pid}*"))
    subprocess.run(["callgrind_control", "--dump", str(pid)], capture_output=True, check=True)
    dump = max(set(work.glob(f"callgrind.out.{pid}*")) - before, key=lambda f: f.stat().st_mtime)
    return int(re.search(r"^(?:summary|totals):\s+(\d+)", dump.read_text(), re.M).group(1))


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
            path = f"/{SERVICE}.stable/" if name == "berth-outbound" else "/"
            wait_until(f"{name} under callgrind", lambda: http_ok(f"http://127.0.0.1:{port}{path}"), timeout=120)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

            def requests(count: int) -> None:
                for _ in range(count):
                    conn.request("GET", path)
                    conn.getresponse().read()

            requests(200)  # warm-up: the pooled upstream connection, lazily built state
            start = time.monotonic()
            busy = instructions(p.pid, work, lambda: requests(n))
            took = time.monotonic() - start
            idle = instructions(p.pid, work, lambda: time.sleep(took))
            out[name] = (busy - idle) / n
            conn.close()
        finally:
            run.stop_event.set()
            PROCS.stop(run.procs)
    return out
