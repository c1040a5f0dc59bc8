# A thread-per-connection HTTP/1.1 server (http.server.ThreadingHTTPServer) that, while serving
# `GET PATH`, calls `GET PREFIX+PATH` on a downstream server (a new connection each time) and
# answers with what it got. Without a downstream it answers `leaf PATH` itself, after --delay
# seconds. With --read-delay, each new connection waits that long before it is read from. With
# --log-context, it logs `TRACEPARENT PATH VALUE` (or `-`) for each request it receives.
# Prints `LISTENING port N` once listening.
#
# usage: relay.py --bind ADDR [--port P] [--downstream HOST:PORT --prefix /leaf] [--delay SECS]
#                 [--read-delay SECS]
import argparse, http.client, http.server, sys, time

ap = argparse.ArgumentParser()
ap.add_argument("--bind", default="127.0.0.1")
ap.add_argument("--port", type=int, default=0)
ap.add_argument("--downstream")
ap.add_argument("--prefix", default="/leaf")
ap.add_argument("--delay", type=float, default=0.0)
ap.add_argument("--read-delay", type=float, default=0.0)
ap.add_argument("--log-context", action="store_true")
args = ap.parse_args()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *a):
        sys.stderr.write("%s %s\n" % (self.address_string(), fmt % a))

    def handle(self):
        time.sleep(args.read_delay)
        super().handle()

    def do_GET(self):
        if args.log_context:
            sys.stderr.write("TRACEPARENT %s %s\n" % (self.path, self.headers.get("traceparent", "-")))
            sys.stderr.flush()
        if args.downstream:
            host, port = args.downstream.rsplit(":", 1)
            conn = http.client.HTTPConnection(host, int(port), timeout=20)
            try:
                conn.request("GET", args.prefix + self.path)
                resp = conn.getresponse()
                body = resp.read()
                status = resp.status
            finally:
                conn.close()
        else:
            time.sleep(args.delay)
            body = ("leaf %s\n" % self.path).encode()
            status = 200
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


server = http.server.ThreadingHTTPServer((args.bind, args.port), Handler)
server.daemon_threads = True
print("LISTENING port %d" % server.server_address[1], flush=True)
server.serve_forever()
