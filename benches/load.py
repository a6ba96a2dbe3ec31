"""Load: oha runs (fixed rate and saturation) and idle keep-alive connections."""

from __future__ import annotations

import json
import re
import socket
import subprocess


def oha(url: str, seconds: float, connections: int, rate: int | None = None) -> dict:
    argv = ["oha", "--no-tui", "--output-format", "json", "-z", f"{seconds}s", "-c", str(connections)]
    if rate:
        argv += ["-q", str(rate), "--latency-correction"]
    out = subprocess.run(argv + [url], capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise RuntimeError(f"oha failed: {out.stderr.strip()}")
    return json.loads(out.stdout)


def completed(report: dict) -> tuple[int, int]:
    """(requests answered 200, every other outcome) of an oha report."""
    codes = report.get("statusCodeDistribution", {})
    ok = int(codes.get("200", 0))
    # oha cancels the requests in flight when -z runs out; those are not the proxy's errors.
    errors = {k: int(v) for k, v in report.get("errorDistribution", {}).items() if k != "aborted due to deadline"}
    if errors:
        print(f"    errors: {errors}", flush=True)
    return ok, sum(int(v) for k, v in codes.items() if k != "200") + sum(errors.values())


def read_response(s: socket.socket) -> None:
    """Reads one HTTP/1.1 response with a Content-Length or chunked body."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("connection closed before a response")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    if m:
        while len(body) < int(m.group(1)):
            body += s.recv(4096)
    elif re.search(rb"(?im)^transfer-encoding:\s*chunked", head):
        while not body.endswith(b"0\r\n\r\n"):
            body += s.recv(4096)


def idle_connections(url: str, n: int) -> list[socket.socket]:
    """n keep-alive connections that each sent one request and now sit idle."""
    port = int(re.match(r"http://127\.0\.0\.1:(\d+)", url).group(1))
    path = url.split(str(port), 1)[1]
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    conns = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(request)
        read_response(s)
        conns.append(s)
    return conns
