"""How berth's cost grows (`run.py --growth`): with many idle connections, with many followed
services and instances, and with a long traffic policy. Each part starts its processes fresh
on 127.0.0.1 and is bounded in time (about three minutes in all)."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import socket
import threading
import time
import urllib.parse
from pathlib import Path

from callgrind import per_request
from load import completed, idle_connections, oha
from procs import PROCS, cpu_seconds, free_port, http_ok, rss_mib, tree, wait_until
from scenarios import (
    BERTH_ENV, SERVICE, Running, berth_inbound, berth_outbound, nginx_argv, nginx_conf, sidecar_argv,
    start_app, start_sidecar, write_instance,
)

IDLE_WINDOW = 5.0  # seconds over which idle CPU is read
FIRST_REQUEST_CLIENTS = 32  # connections the first request to each followed service comes from
# rnacos, the Nacos server the tests use (scripts/deps/10-rnacos.sh installs it); without it
# the followed-services part runs with the directory registry only.
RNACOS = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo")) / "bin" / "rnacos"


def idle_cpu_per_s(pids: list[int], seconds: float = IDLE_WINDOW, also: list[int] | None = None):
    """CPU seconds per second the processes use while nothing is asked of them; with `also`,
    the same of those other processes over the same window, as a pair."""
    c0, a0, t0 = cpu_seconds(pids), cpu_seconds(also or []), time.monotonic()
    time.sleep(seconds)
    took = time.monotonic() - t0
    mine = (cpu_seconds(pids) - c0) / took
    return (mine, (cpu_seconds(also) - a0) / took) if also else mine


def nginx_many(work: Path, run: Running, conns: int) -> None:
    """The `nginx` scenario with room for `conns` clients in each worker (nginx does not
    spread accepted connections evenly between its workers)."""
    app, port = start_app(work, run), free_port()
    conf = nginx_conf(work, app, port, workers=2, connections=conns + 1024)
    p = PROCS.start(nginx_argv(work, conf), work / "nginx.log")
    run.procs.append(p)
    run.url = f"http://127.0.0.1:{port}/"
    wait_until("nginx", lambda: http_ok(run.url))
    run.proxy_pids = tree(p.pid)


def many_idle(work_root: Path, n: int) -> dict:
    """RSS and idle CPU of each proxy with n idle keep-alive connections (each sent one
    request and stays open), against the same proxy with none."""
    starts = {
        "berth-inbound": berth_inbound,
        "berth-outbound": berth_outbound,
        "nginx": lambda work, run: nginx_many(work, run, n),
    }
    out = {}
    for name, start in starts.items():
        work = work_root / f"idle-{name}"
        work.mkdir()
        run = Running(url="")
        try:
            start(work, run)
            oha(run.url, 2, 16, rate=1000)  # warm up as the scenarios do
            time.sleep(1)
            pids = run.proxy_pids
            r = {"rss_idle_mib": rss_mib(pids), "cpu_idle_per_s": idle_cpu_per_s(pids)}
            t = time.monotonic()
            conns = idle_connections(run.url, n)
            r["open_s"] = time.monotonic() - t
            time.sleep(1)
            r["rss_conns_mib"] = rss_mib(pids)
            r["cpu_conns_per_s"] = idle_cpu_per_s(pids)
            r["kib_per_conn"] = (r["rss_conns_mib"] - r["rss_idle_mib"]) * 1024 / n
            for s in conns:
                s.close()
            out[name] = r
            print(f"growth: {n} idle connections, {name}: " + json.dumps({k: round(v, 3) for k, v in r.items()}),
                  flush=True)
        finally:
            run.stop_event.set()
            PROCS.stop(run.procs)
    return out


def heartbeat(paths: list[Path], stop: threading.Event) -> None:
    """Touches instance files every 2 s, as their registering process would."""
    while not stop.wait(2.0):
        for path in paths:
            os.utime(path)


def register_many(registry: Path, services: int, ports: list[int], owner_pid: int, stop: threading.Event) -> list[str]:
    """`services` services in the directory registry, each with an instance on every port
    (the same few apps behind every service), laid out as write_instance lays out one."""
    host = Path("/proc/sys/kernel/hostname").read_text().strip()
    names, paths = [], []
    for i in range(services):
        name = f"grow-{i:04}"
        d = registry / "public" / "naming" / "DEFAULT_GROUP" / name
        d.mkdir(parents=True)
        for port in ports:
            record = {"addr": f"127.0.0.1:{port}", "weight": 1.0, "healthy": True, "enabled": True,
                      "metadata": {"berth.symbol": "stable"}, "host": host, "pid": owner_pid}
            path = d / f"127.0.0.1_{port}.json"
            path.write_text(json.dumps(record))
            paths.append(path)
        names.append(name)
    threading.Thread(target=heartbeat, args=(paths, stop), daemon=True).start()
    return names


def cpu_per_request(run: Running, url: str, rate: int, seconds: float, idle_per_s: float) -> dict:
    cpu0 = cpu_seconds(run.proxy_pids)
    report = oha(url, seconds, 50, rate=rate)
    cpu = cpu_seconds(run.proxy_pids) - cpu0
    ok, errors = completed(report)
    return {
        "cpu_us_per_req": cpu / ok * 1e6 if ok else None,
        # The same less what the sidecar spends anyway while idle (its registry polls).
        "cpu_us_per_req_less_idle": (cpu - idle_per_s * seconds) / ok * 1e6 if ok else None,
        "errors": errors,
    }


def start_rnacos(work: Path, run: Running) -> int:
    """rnacos on 127.0.0.1 (HTTP on a free port, gRPC 1000 above, as Nacos clients derive it),
    its data under `work`; returns the HTTP port once both answer."""
    for _ in range(20):
        http_port = free_port()
        if http_port + 1000 < 65536 and port_free(http_port + 1000):
            break
    data = work / "rnacos"
    data.mkdir()
    env = {"RNACOS_HTTP_PORT": str(http_port), "RNACOS_GRPC_PORT": str(http_port + 1000),
           "RNACOS_HTTP_CONSOLE_PORT": "0", "RNACOS_SDK_HOST": "127.0.0.1",
           "RNACOS_DATA_DIR": str(data / "data"), "RNACOS_HTTP_WORKERS": "2",
           "RNACOS_NAMING_INSTANCE_METADATA_PERSISTENCE_ENABLE": "false"}
    p = PROCS.start([str(RNACOS)], work / "rnacos.log", env=env, cwd=data)
    run.procs.append(p)

    def answers() -> bool:
        url = f"http://127.0.0.1:{http_port}/nacos/v1/ns/instance/list?serviceName=probe"
        socket.create_connection(("127.0.0.1", http_port + 1000), timeout=1).close()
        return http_ok(url)

    wait_until("rnacos", answers, timeout=30)
    return http_port


def port_free(port: int) -> bool:
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False


def register_many_nacos(http_port: int, services: int, ports: list[int]) -> list[str]:
    """The same services and instances in rnacos, as persistent instances (no heartbeats to
    send), through its HTTP API on one keep-alive connection."""
    meta = urllib.parse.quote(json.dumps({"berth.symbol": "stable"}))
    conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=30)
    names = []
    for i in range(services):
        name = f"grow-{i:04}"
        for port in ports:
            conn.request("POST", f"/nacos/v1/ns/instance?serviceName={name}&ip=127.0.0.1&port={port}"
                                 f"&ephemeral=false&metadata={meta}")
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"rnacos refused {name} :{port}: {resp.status} {body[:200]!r}")
        names.append(name)
    conn.close()
    return names


def first_requests(port: int, names: list[str], clients: int = FIRST_REQUEST_CLIENTS) -> None:
    """One request to each service, from `clients` keep-alive connections at once (an app's
    calls come concurrently; one after another, each waits for its service's first instance
    set from the registry: about 150 ms each from rnacos)."""
    def client(share: list[str]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            for name in share:
                conn.request("GET", f"/{name}.stable/")
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"{name}: {resp.status} {resp.getheader('x-berth-error')}")
        finally:
            conn.close()

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for done in [pool.submit(client, names[i::clients]) for i in range(min(clients, len(names)))]:
            done.result()  # raises the first failure


def many_services(work_root: Path, services: int, per_service: int, rate: int, seconds: float,
                  registry_kind: str) -> dict:
    """A consumer sidecar before and after it follows `services` services of `per_service`
    instances each, in a directory registry or in rnacos; it starts following a service on
    the app's first request to it, as in production, so each is requested once."""
    out = {}
    for label, count in (("1 service", 1), (f"{services:,} services", services)):
        work = work_root / f"services-{registry_kind}-{count}"
        work.mkdir()
        run = Running(url="")
        try:
            apps = [start_app(work, run) for _ in range(per_service)]
            if registry_kind == "nacos":
                http_port = start_rnacos(work, run)
                server = [run.procs[-1].pid]
                t = time.monotonic()
                names = register_many_nacos(http_port, count, apps)
                print(f"growth: registered {count * per_service:,} instances in rnacos in "
                      f"{time.monotonic() - t:.1f} s", flush=True)
                registry: Path | str = f"nacos://127.0.0.1:{http_port}"
            else:
                registry = work / "registry"
                names = register_many(registry, count, apps, run.app_pid, run.stop_event)
                server = []
            _, port = start_sidecar(work, run, "bench-consumer", apps[0], registry)
            time.sleep(1)
            pids = run.proxy_pids
            r = {"rss_before_mib": rss_mib(pids), "cpu_idle_before_per_s": idle_cpu_per_s(pids)}
            t = time.monotonic()
            first_requests(port, names)
            r["follow_s"] = time.monotonic() - t
            oha(f"http://127.0.0.1:{port}/{names[0]}.stable/", 2, 16, rate=rate // 2)
            time.sleep(1)
            r["rss_after_mib"] = rss_mib(pids)
            if server:  # and what the registry server spends meanwhile, answering this sidecar
                r["cpu_idle_after_per_s"], r["server_cpu_idle_per_s"] = idle_cpu_per_s(pids, also=server)
            else:
                r["cpu_idle_after_per_s"] = idle_cpu_per_s(pids)
            r.update(cpu_per_request(run, f"http://127.0.0.1:{port}/{names[0]}.stable/", rate, seconds,
                                     r["cpu_idle_after_per_s"]))
            label = f"{label}, {count * per_service:,} instances, {registry_kind} registry"
            out[label] = r
            print(f"growth: {label}: " + json.dumps(
                {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}), flush=True)
        finally:
            run.stop_event.set()
            PROCS.stop(run.procs)
    return out


def policy_document(rules: int) -> str:
    """A valid policy of `rules` rules, none of which matches the benchmark's request (which
    carries `x-user` and a `group` cookie), so every request tries all of them: exact, prefix
    and regex matches on the header, exact matches on the cookie, in turn."""
    kinds = [
        lambda i: {"header": "x-user", "exact": f"user-{i}"},
        lambda i: {"header": "x-user", "prefix": f"beta-{i}-"},
        lambda i: {"cookie": "group", "exact": f"group-{i}"},
        lambda i: {"header": "x-user", "regex": f"^tenant-{i}$"},
    ]
    return json.dumps({
        "schema": 1, "version": 1, "default": "stable",
        "rules": [{"name": f"rule {i}", "match": [kinds[i % 4](i)], "symbol": "canary"} for i in range(rules)],
    })


def policy_instructions(work_root: Path, rules_counts: tuple[int, ...], n: int) -> dict:
    """Instructions per outbound request under callgrind with policies of each rule count."""
    # By Host header: a path prefix `/<service>.<symbol>/` names the symbol, and a symbol the
    # request carries wins over every rule, so the rules would not run.
    headers = {"host": SERVICE, "x-user": "someone", "cookie": "group=none"}
    out = {}
    for rules in rules_counts:
        work = work_root / f"policy-{rules}"
        work.mkdir()
        run = Running(url="")
        try:
            app, port, admin = start_app(work, run), free_port(), free_port()
            registry = work / "registry"
            write_instance(registry, SERVICE, app, run.app_pid, run.stop_event)
            if rules:
                config = registry / "public" / "config" / "BERTH"
                config.mkdir(parents=True)
                (config / f"berth.traffic.{SERVICE}").write_text(policy_document(rules))
            argv = sidecar_argv("bench-consumer", app, registry, free_port(), admin, port, SERVICE)
            vg = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={work}/callgrind.out.%p"]
            p = PROCS.start(vg + argv, work / "sidecar.log", env=BERTH_ENV)
            run.procs.append(p)
            path = "/"
            wait_until("sidecar under callgrind", lambda: http_ok(f"http://127.0.0.1:{port}/{SERVICE}.stable/"),
                       timeout=120)
            want = 1 if rules else 0

            def applied() -> bool:
                c = http.client.HTTPConnection("127.0.0.1", admin, timeout=5)
                try:
                    c.request("GET", "/endpoints")
                    services = json.loads(c.getresponse().read())["services"]
                    return SERVICE in services and services[SERVICE]["policy"]["version"] == want
                finally:
                    c.close()

            wait_until(f"policy of {rules} rules applied", applied, timeout=60)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

            def requests(count: int) -> None:
                for _ in range(count):
                    conn.request("GET", path, headers=headers)
                    resp = conn.getresponse()
                    resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"policy run: {resp.status}")

            requests(200)
            out[rules] = per_request(p.pid, work, requests, n)
            conn.close()
            print(f"growth: policy of {rules} rules: {out[rules]:,.0f} instructions/request", flush=True)
        finally:
            run.stop_event.set()
            PROCS.stop(run.procs)
    return out


def growth(work_root: Path, args) -> dict:
    work_root.mkdir(parents=True, exist_ok=True)
    return {
        "idle_connections": args.growth_conns,
        "idle": many_idle(work_root, args.growth_conns),
        "services": {label: r for kind in ("dir", "nacos") if kind == "dir" or RNACOS.exists()
                     for label, r in many_services(work_root, args.growth_services,
                                                   args.growth_instances // args.growth_services,
                                                   args.rate, args.duration, kind).items()},
        "policy": policy_instructions(work_root, (0, args.growth_rules), args.callgrind_requests or 2000),
    }


def server_cpu(r: dict) -> str:
    v = r.get("server_cpu_idle_per_s")
    return f"{v * 1e3:.1f}" if v is not None else "—"


def report(g: dict) -> str:
    n = g["idle_connections"]
    lines = ["How cost grows:", "",
             f"| proxy | RSS idle MiB | RSS, {n:,} idle conns, MiB | KiB per idle conn | CPU idle, ms/s | "
             f"CPU with {n:,} idle conns, ms/s | seconds to open them |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in g["idle"].items():
        lines.append(f"| {name} | {r['rss_idle_mib']:.1f} | {r['rss_conns_mib']:.1f} | {r['kib_per_conn']:.2f} | "
                     f"{r['cpu_idle_per_s'] * 1e3:.1f} | {r['cpu_conns_per_s'] * 1e3:.1f} | {r['open_s']:.1f} |")
    lines += ["", "| consumer sidecar following | RSS before MiB | RSS after MiB | CPU idle after, ms/s | "
                  "rnacos's CPU meanwhile, ms/s | seconds to follow all | CPU µs/req | less idle CPU | errors |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, r in g["services"].items():
        cpu = r["cpu_us_per_req"]
        less = r["cpu_us_per_req_less_idle"]
        lines.append(f"| {label} | {r['rss_before_mib']:.1f} | {r['rss_after_mib']:.1f} | "
                     f"{r['cpu_idle_after_per_s'] * 1e3:.1f} | {server_cpu(r)} | {r['follow_s']:.1f} | "
                     f"{cpu:.1f} | {less:.1f} | {r['errors']} |" if cpu is not None else f"| {label} | failed |")
    lines += ["", "| policy rules | instructions/request (outbound, callgrind) |", "|---:|---:|"]
    lines += [f"| {rules} | {v:,.0f} |" for rules, v in g["policy"].items()]
    return "\n".join(lines) + "\n"
