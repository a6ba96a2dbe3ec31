"""A consumer without a sidecar: the official Python Nacos client (nacos-sdk-python, its
gRPC client for Nacos 2.x), as berth's integration tests use it.

  watch SERVICE  subscribe and print the service's instances as one JSON line per push
                 (and once at the start), as the client holds them
  call ADDR N    send N GETs to ADDR (an instance the client had cached), one every
                 --interval-ms, from --source-ip, printing each answer as a JSON line

Every line is JSON with an "event" key; the script stops by itself (--for seconds at most).
"""

import argparse
import asyncio
import http.client
import json
import logging
import sys
import tempfile
import time

from v2.nacos import ClientConfigBuilder, GRPCConfig, NacosNamingService
from v2.nacos.naming.model.naming_param import ListInstanceParam, SubscribeServiceParam


def emit(**fields):
    print(json.dumps(fields), flush=True)


def host(i):
    return {
        "ip": i.ip,
        "port": i.port,
        "weight": i.weight,
        "healthy": i.healthy,
        "enabled": i.enabled,
        "cluster": i.clusterName,
        "metadata": i.metadata,
    }


async def watch(args):
    http_host, http_port = args.server.rsplit(":", 1)
    logs = tempfile.mkdtemp(prefix="nacos-client-")
    config = (
        ClientConfigBuilder()
        .server_address(args.server)
        .log_dir(logs)
        .log_level(logging.WARNING)
        .grpc_config(GRPCConfig(port_offset=args.grpc_port - int(http_port)))
        .build()
    )
    config.cache_dir = logs
    naming = await NacosNamingService.create_naming_service(config)

    async def pushed(instances):
        emit(event="instances", source="push", hosts=[host(i) for i in instances])

    await naming.subscribe(SubscribeServiceParam(service_name=args.service, subscribe_callback=pushed))
    now = await naming.list_instances(ListInstanceParam(service_name=args.service, subscribe=True, healthy_only=None))
    emit(event="instances", source="list", hosts=[host(i) for i in now])
    await asyncio.sleep(args.for_seconds)
    await naming.shutdown()


def call(args):
    ip, port = args.addr.rsplit(":", 1)
    for n in range(args.count):
        conn = http.client.HTTPConnection(ip, int(port), timeout=5, source_address=(args.source_ip, 0))
        try:
            conn.request("GET", "/")
            resp = conn.getresponse()
            resp.read()
            emit(event="call", n=n, status=resp.status, lifecycle=resp.getheader("x-berth-lifecycle"))
        except OSError as e:
            emit(event="call", n=n, status=0, error=str(e))
        finally:
            conn.close()
        time.sleep(args.interval_ms / 1000)
    emit(event="done")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", help="the Nacos HTTP address, host:port")
    p.add_argument("--grpc-port", type=int, help="the Nacos gRPC port")
    p.add_argument("--for", dest="for_seconds", type=float, default=120, help="stop after this long")
    p.add_argument("--source-ip", default="127.0.0.1", help="call from this loopback address")
    p.add_argument("--interval-ms", type=int, default=100)
    p.add_argument("what", choices=["watch", "call"])
    p.add_argument("target", help="the service (watch) or ip:port (call)")
    p.add_argument("count", nargs="?", type=int, default=10)
    args = p.parse_args()
    if args.what == "watch":
        args.service = args.target
        asyncio.run(watch(args))
    else:
        args.addr = args.target
        call(args)


if __name__ == "__main__":
    sys.exit(main())
