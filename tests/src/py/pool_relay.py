# An HTTP/1.1 server whose requests are served by tasks on one shared pool of threads rather
# than by a thread of their own: a task reads one request from a connection and queues its
# handling as another task, which calls `GET PREFIX+PATH` on a downstream server (a new
# connection each time), answers, and queues the next read of its connection. So a request may
# be read by one thread and handled by another, and a thread reads requests of some connections
# while it handles others': how Go, tokio or .NET schedule their tasks, in python. Prints
# `LISTENING port N` once listening.
#
# usage: pool_relay.py --downstream HOST:PORT [--prefix /leaf] [--threads N]
import argparse, concurrent.futures, http.client, socket, sys

ap = argparse.ArgumentParser()
ap.add_argument("--bind", default="127.0.0.1")
ap.add_argument("--downstream", required=True)
ap.add_argument("--prefix", default="/leaf")
ap.add_argument("--threads", type=int, default=4)
args = ap.parse_args()
down_host, down_port = args.downstream.rsplit(":", 1)
down_port = int(down_port)
pool = concurrent.futures.ThreadPoolExecutor(args.threads)


def guarded(f):
    def run(*a):
        try:
            f(*a)
        except Exception as e:
            sys.stderr.write("%s failed: %r\n" % (f.__name__, e))
            a[0].close()
    return run


@guarded
def read_request(conn, buf):
    # The client sends its next request as soon as it has the previous answer: this read waits
    # briefly, or finds the connection closed.
    while b"\r\n\r\n" not in buf:
        data = conn.recv(65536)
        if not data:
            conn.close()
            return
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    path = head.split(b"\r\n", 1)[0].split(b" ")[1].decode()
    pool.submit(handle_request, conn, path, rest)


@guarded
def handle_request(conn, path, rest):
    c = http.client.HTTPConnection(down_host, down_port, timeout=20)
    try:
        c.request("GET", args.prefix + path)
        r = c.getresponse()
        body = r.read()
    finally:
        c.close()
    conn.sendall(b"HTTP/1.1 %d OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"
                 % (r.status, len(body)) + body)
    pool.submit(read_request, conn, rest)


listener = socket.create_server((args.bind, 0), backlog=128)
print("LISTENING port %d" % listener.getsockname()[1], flush=True)
while True:
    conn, _ = listener.accept()
    pool.submit(read_request, conn, b"")
