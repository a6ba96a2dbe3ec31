"""Processes of a benchmark run: starting them, and reading their CPU time and memory."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


class Procs:
    """Every child process, each in its own process group so a proxy's workers go with it."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen] = []

    def start(self, argv: list[str], log: Path, env: dict | None = None, cwd: Path | None = None) -> subprocess.Popen:
        out = open(log, "ab")
        p = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, start_new_session=True, cwd=cwd,
        )
        out.close()
        self.children.append(p)
        return p

    def stop(self, procs: list[subprocess.Popen]) -> None:
        """TERM, then KILL after a second (berth drains on TERM; a benchmark need not wait)."""
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 1.0
        for p in procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(p.pid, signal.SIGKILL)  # also any worker left in its group
            except ProcessLookupError:
                pass
            p.wait()
            if p in self.children:
                self.children.remove(p)

    def stop_all(self) -> None:
        self.stop(list(self.children))


PROCS = Procs()


def free_port() -> int:
    # The tiny race (another program taking the port before ours binds it) is acceptable here.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what: str, check, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1) as r:
        return r.status == 200


def tree(pid: int) -> list[int]:
    """`pid` and its descendants (nginx's workers are children of its master)."""
    parents: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of the processes (all their threads), from /proc/<pid>/stat."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat
    return total / TICK


def rss_mib(pids: list[int]) -> float:
    kib = 0
    for pid in pids:
        m = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
        kib += int(m.group(1)) if m else 0
    return kib / 1024
