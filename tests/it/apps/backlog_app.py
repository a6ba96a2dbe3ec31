"""A plain Python HTTP app with the standard library's accept backlog (5).

`python3 backlog_app.py [--keep-alive] [--delay-ms N]` listens on 127.0.0.1 on an ephemeral port
and prints `listening on 127.0.0.1:PORT`. It answers `GET /` with `hello` (after N ms) and
`GET /connections` with how many connections have carried a request (health checks that
only connect do not count). Without `--keep-alive` it speaks
HTTP/1.0 and closes every connection after one response, as `python3 -m http.server` does.
"""

import argparse
import http.server
import sys
import threading
import time


class Server(http.server.ThreadingHTTPServer):
    # The standard library's default, said out loud: the accept backlog under test.
    request_queue_size = 5
    daemon_threads = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.used = 0
        self.lock = threading.Lock()


def handler(keep_alive, delay):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"
        # One handler serves one connection, however many requests it carries.
        counted = False

        def do_GET(self):
            if self.path == "/connections":
                with self.server.lock:
                    body = f"{self.server.used}\n".encode()
            else:
                if not self.counted:
                    self.counted = True
                    with self.server.lock:
                        self.server.used += 1
                time.sleep(delay)
                body = b"hello\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    return Handler


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep-alive", action="store_true")
    parser.add_argument("--delay-ms", type=int, default=0)
    args = parser.parse_args()
    server = Server(("127.0.0.1", 0), handler(args.keep_alive, args.delay_ms / 1000))
    host, port = server.server_address[:2]
    print(f"listening on {host}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
