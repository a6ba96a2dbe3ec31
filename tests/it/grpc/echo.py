"""A gRPC server and client for berth's tests, with grpcio's generic handlers and raw bytes
(no protobuf): `serve` prints `listening on 127.0.0.1:PORT` and serves berth.test.Echo;
`call TARGET AUTHORITY CASE` makes one call and prints its outcome as JSON."""

import json
import sys
from concurrent import futures

import grpc

SERVICE = "berth.test.Echo"


def unary(request, context):
    return b"echo:" + request


def fail(request, context):
    context.abort(grpc.StatusCode.NOT_FOUND, "no such order: " + request.decode())


def stream(request, context):
    for i in range(int(request)):
        yield f"item {i}".encode()


def collect(requests, context):
    return b",".join(requests)


def serve():
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
        "Collect": grpc.stream_unary_rpc_method_handler(collect),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"listening on 127.0.0.1:{port}", flush=True)
    server.wait_for_termination()


def call(target, authority, case):
    channel = grpc.insecure_channel(target, options=[("grpc.default_authority", authority)])
    method = f"/{SERVICE}/"
    try:
        if case == "unary":
            value = channel.unary_unary(method + "Unary")(b"hello", timeout=10).decode()
        elif case == "fail":
            value = channel.unary_unary(method + "Fail")(b"7", timeout=10).decode()
        elif case == "stream":
            value = [m.decode() for m in channel.unary_stream(method + "Stream")(b"3", timeout=10)]
        elif case == "collect":
            value = channel.stream_unary(method + "Collect")(iter([b"a", b"b", b"c"]), timeout=10).decode()
        else:
            raise SystemExit(f"unknown case {case}")
        out = {"code": "OK", "value": value}
    except grpc.RpcError as e:
        out = {"code": e.code().name, "details": e.details()}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve()
    else:
        call(*sys.argv[2:5])
