# Traffic whose every byte is checked, to show that context injection changes nothing but the
# one header it adds.
#
# usage: injection_check.py server
#            An HTTP/1.1 keep-alive server (one thread per connection) on 127.0.0.1, port 0;
#            prints `LISTENING port N`. Deterministic answers:
#              GET /small/N    a short body that depends on N (Content-Length)
#              GET /big/N      65536 bytes that depend on N (Content-Length)
#              GET /chunked/N  Transfer-Encoding: chunked, written by hand, chunk sizes from N
#              GET /ctx/N      whether the request's one traceparent is the client's own
#              HEAD /small/N   the head of GET /small/N
#              POST|PUT /echo  `<sha256 hex> <length>` of the request body it received
#                              (Content-Length or chunked)
#              GET /stats      JSON: what the traceparent headers of the requests were (not counted)
#              POST /reset     zeroes the counts (not counted)
#            Per request it records whether `traceparent` was present, well formed, present more
#            than once, the client's own value, and the first header.
#        injection_check.py client HOST PORT OUT
#            Mixed traffic to HOST:PORT: keep-alive http.client connections (GET small, big,
#            chunked; POST/PUT bodies of 0 B to 64 KiB with Content-Length; chunked POST bodies;
#            requests that carry their own traceparent; heads longer than 2 KiB; HEAD), and raw
#            sockets (three GETs pipelined in one write; head and body in one write; a body over
#            three writes; Expect: 100-continue; the end of a body and the next head in one
#            write; a head split over two writes). Writes to OUT one line `kind path status sha256(body)` per request, in a
#            fixed order, then `failures N`; prints the failures on stderr. Exit status 0 unless
#            the client itself broke.
import hashlib, http.client, http.server, json, re, socket, sys, threading

CLIENT_TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TP_RE = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
BIG = 65536
BASE = hashlib.sha256(b"base").digest() * (BIG // 32)


def small_body(n):
    return ("small %d\n" % n).encode() * (1 + n % 7)


def big_body(n):
    head = ("big %010d\n" % n).encode()
    return head + BASE[len(head):BIG]


def chunk_sizes(n):
    return [1 + n % 50, 1000, 4096 + n % 100, 7, 1 + n % 3]


def chunked_body(n):
    return b"".join(bytes([97 + i]) * (s + i) for i, s in enumerate(chunk_sizes(n)))


def post_body(n, size):
    seed = ("post %d %d|" % (n, size)).encode()
    return (seed * (size // len(seed) + 1))[:size]


# ---------------------------------------------------------------------------------------------
# Server

class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.c = {
            "requests": 0,
            "with_tp": 0,
            "well_formed": 0,
            "malformed": 0,
            "multiple": 0,
            "client_tp": 0,
            "other_tp": 0,
            "other_tp_first": 0,
            "errors": 0,
            "by_kind": {},
        }
        self.bad = []

    def record(self, kind, headers):
        tps = headers.get_all("traceparent") or []
        keys = [k.lower() for k in headers.keys()]
        with self.lock:
            c = self.c
            c["requests"] += 1
            k = c["by_kind"].setdefault(kind, [0, 0])
            k[0] += 1
            if tps:
                c["with_tp"] += 1
                k[1] += 1
            if len(tps) > 1:
                c["multiple"] += 1
                self.bad.append(("multiple", tps))
            if len(tps) == 1:
                v = tps[0]
                if TP_RE.match(v):
                    c["well_formed"] += 1
                else:
                    c["malformed"] += 1
                    self.bad.append(("malformed", v))
                if v == CLIENT_TP:
                    c["client_tp"] += 1
                else:
                    c["other_tp"] += 1
                    if keys and keys[0] == "traceparent":
                        c["other_tp_first"] += 1

    def error(self, what):
        with self.lock:
            self.c["errors"] += 1
            self.bad.append(("error", what))

    def snapshot(self):
        with self.lock:
            d = json.loads(json.dumps(self.c))
            d["bad"] = [list(map(str, b)) for b in self.bad[:20]]
            return d


STATS = Stats()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Heads, bodies and chunks are separate writes: no Nagle delay between them.
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        pass

    def send_error(self, code, message=None, explain=None):
        STATS.error("%d %s %r" % (code, message, getattr(self, "raw_requestline", b"")[:200]))
        super().send_error(code, message, explain)

    def reply(self, body, status=200):
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def kind_n(self):
        parts = self.path.split("/")
        if len(parts) != 3:
            return parts[1] if len(parts) > 1 else "", None
        try:
            return parts[1], int(parts[2])
        except ValueError:
            return parts[1], None

    def do_GET(self):
        if self.path == "/stats":
            return self.reply(json.dumps(STATS.snapshot()).encode())
        kind, n = self.kind_n()
        STATS.record(kind, self.headers)
        if n is None:
            STATS.error("GET path %r" % self.path)
            return self.reply(b"unknown path\n", 404)
        if kind == "small":
            self.reply(small_body(n))
        elif kind == "big":
            self.reply(big_body(n))
        elif kind == "chunked":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i, s in enumerate(chunk_sizes(n)):
                data = bytes([97 + i]) * (s + i)
                self.wfile.write(b"%x\r\n" % len(data) + data + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif kind == "ctx":
            tps = self.headers.get_all("traceparent") or []
            self.reply(("ctx %d count=%d own=%d\n" % (n, len(tps), tps == [CLIENT_TP])).encode())
        else:
            STATS.error("GET path %r" % self.path)
            self.reply(b"unknown path\n", 404)

    def read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if te == "chunked":
            body = b""
            while True:
                line = self.rfile.readline(1024)
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    # Trailer section: up to an empty line.
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return body
                body += self.rfile.read(size)
                if self.rfile.read(2) != b"\r\n":
                    raise ValueError("chunk not followed by CRLF")
        n = int(self.headers.get("Content-Length", "0"))
        return self.rfile.read(n)

    def do_HEAD(self):
        kind, n = self.kind_n()
        STATS.record("head-" + kind, self.headers)
        if kind != "small" or n is None:
            STATS.error("HEAD path %r" % self.path)
            return self.reply(b"unknown path\n", 404)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(small_body(n))))
        self.end_headers()

    def do_POST(self):
        if self.path == "/reset":
            STATS.reset()
            return self.reply(b"reset\n")
        self.echo()

    def do_PUT(self):
        self.echo()

    def echo(self):
        STATS.record(self.command.lower() + "-echo", self.headers)
        try:
            body = self.read_body()
        except Exception as e:
            STATS.error("reading the body of %s %s: %r" % (self.command, self.path, e))
            self.close_connection = True
            return self.reply(b"bad body\n", 400)
        if self.path != "/echo":
            STATS.error("%s path %r" % (self.command, self.path))
            return self.reply(b"unknown path\n", 404)
        self.reply(("%s %d\n" % (hashlib.sha256(body).hexdigest(), len(body))).encode())


def serve():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.request_queue_size = 128
    print("LISTENING port %d" % server.server_address[1], flush=True)
    server.serve_forever()


# ---------------------------------------------------------------------------------------------
# Client

# Keep-alive workers (threads), sessions (connections) per worker, requests per session.
WORKERS, SESSIONS, PER_SESSION = 6, 40, 40
# Raw-socket pipelining: connections, batches of three GETs per connection.
PIPE_CONNS, PIPE_BATCHES = 60, 6
# Raw sockets with other write patterns: connections, requests per connection.
RAW_CONNS, RAW_PER = 40, 12
POST_SIZES = [0, 1, 17, 1000, 1460, 4000, 16384, 65535, 65536]


class Failure(Exception):
    pass


def expect_status(kind, path, status, want=200):
    if status != want:
        raise Failure("%s %s: status %d" % (kind, path, status))


def check_echo(kind, path, body, sent):
    want = ("%s %d\n" % (hashlib.sha256(sent).hexdigest(), len(sent))).encode()
    if body != want:
        raise Failure("%s %s: the server received other bytes: %r, sent %r" % (kind, path, body, want))


def check_get(kind, path, body):
    k, n = path.split("/")[1], int(path.split("/")[2])
    want = {"small": small_body, "big": big_body, "chunked": chunked_body}.get(k)
    if want is not None and body != want(n):
        raise Failure("%s %s: unexpected body (%d bytes) %r" % (kind, path, len(body), body[:80]))
    if k == "ctx" and body != ("ctx %d count=1 own=1\n" % n).encode():
        raise Failure("%s %s: the server saw %r" % (kind, path, body))


def line(kind, path, status, body):
    return "%s %s %d %s" % (kind, path, status, hashlib.sha256(body).hexdigest())


def worker(host, port, w, out, failures):
    n = w * 1_000_000
    for s in range(SESSIONS):
        c = http.client.HTTPConnection(host, port, timeout=30)
        for i in range(PER_SESSION):
            n += 1
            last = i == PER_SESSION - 1
            sel = i % 10
            headers = {}
            body = None
            method = "GET"
            chunked = False
            if last and s % 3 == 0:
                # Chunked request body: the kernel stops editing this connection.
                kind, method, path = "post-chunked", "POST", "/echo"
                size = POST_SIZES[n % len(POST_SIZES)] or 5
                body = post_body(n, size)
                chunked = True
            elif last and s % 3 == 1:
                # A head longer than the kernel's scan window.
                kind, path = "get-long-head", "/small/%d" % n
                headers["X-Pad"] = "p" * 3000
            elif sel in (0, 1, 2):
                kind, path = "get-small", "/small/%d" % n
            elif sel == 3:
                kind, path = "get-big", "/big/%d" % n
            elif sel == 4:
                kind, path = "get-chunked", "/chunked/%d" % n
            elif sel in (5, 6):
                kind, method, path = "post", "POST", "/echo"
                body = post_body(n, POST_SIZES[n % len(POST_SIZES)])
            elif sel == 7:
                kind, method, path = "put", "PUT", "/echo"
                body = post_body(n, POST_SIZES[(n * 7) % len(POST_SIZES)])
            elif sel == 8:
                kind, path = "get-ctx", "/ctx/%d" % n
                headers["traceparent"] = CLIENT_TP
            elif (i // 10 + s) % 2:
                kind, method, path = "head-small", "HEAD", "/small/%d" % n
            else:
                kind, path = "get-small-headers", "/small/%d" % n
                headers["X-Request-Id"] = "r-%d" % n
                headers["Accept"] = "*/*"
            try:
                if chunked:
                    c.request(method, path, body=iter([body[: len(body) // 2], body[len(body) // 2:]]),
                              headers=headers, encode_chunked=True)
                else:
                    c.request(method, path, body=body, headers=headers)
                r = c.getresponse()
                data = r.read()
                out.append(line(kind, path, r.status, data))
                expect_status(kind, path, r.status)
                if body is not None:
                    check_echo(kind, path, data, body)
                elif method == "HEAD":
                    if data or r.getheader("Content-Length") != str(len(small_body(n))):
                        raise Failure("%s %s: %r %r" % (kind, path, r.getheaders(), data))
                else:
                    check_get(kind, path, data)
            except Exception as e:
                failures.append("%s %s: %r" % (kind, path, e))
                c.close()
                c = http.client.HTTPConnection(host, port, timeout=30)
        c.close()


def read_response(f, head=False):
    status_line = f.readline(65537)
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise Failure("bad status line %r" % status_line)
    status = int(parts[1])
    length, chunked = None, False
    while True:
        h = f.readline(65537)
        if h in (b"\r\n", b"\n"):
            break
        if not h:
            raise Failure("connection closed in a response head")
        name, _, value = h.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding" and value.strip().lower() == b"chunked":
            chunked = True
    if head:
        return status, b""
    if chunked:
        body = b""
        while True:
            size = int(f.readline(1024).split(b";")[0].strip(), 16)
            if size == 0:
                while f.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return status, body
            body += f.read(size)
            if f.read(2) != b"\r\n":
                raise Failure("chunk not followed by CRLF")
    body = f.read(length or 0)
    if len(body) != (length or 0):
        raise Failure("short body")
    return status, body


def get_head(host, port, path, extra=""):
    return ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: injection-check\r\n%s\r\n"
            % (path, host, port, extra)).encode()


def post_head(host, port, path, size, extra=""):
    return ("POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/octet-stream\r\n"
            "Content-Length: %d\r\n%s\r\n" % (path, host, port, size, extra)).encode()


def pipeliner(host, port, out, failures):
    n = 90_000_000
    kinds = ["small", "chunked", "big", "small"]
    for c in range(PIPE_CONNS):
        s = socket.create_connection((host, port), timeout=30)
        f = s.makefile("rb")
        try:
            for b in range(PIPE_BATCHES):
                paths = []
                for k in range(3):
                    n += 1
                    paths.append("/%s/%d" % (kinds[(n + c) % len(kinds)], n))
                s.sendall(b"".join(get_head(host, port, p) for p in paths))
                for p in paths:
                    status, data = read_response(f)
                    out.append(line("pipelined", p, status, data))
                    expect_status("pipelined", p, status)
                    check_get("pipelined", p, data)
        except Exception as e:
            failures.append("pipelined connection %d: %r" % (c, e))
        finally:
            f.close()
            s.close()


def raw(host, port, out, failures):
    n = 95_000_000
    for c in range(RAW_CONNS):
        s = socket.create_connection((host, port), timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        f = s.makefile("rb")
        try:
            for i in range(RAW_PER):
                n += 1
                sel = (i + c) % 6
                follow = None
                if sel == 0:
                    # Head and the whole body in one write.
                    kind, path = "raw-post-one-write", "/echo"
                    body = post_body(n, POST_SIZES[n % len(POST_SIZES)])
                    s.sendall(post_head(host, port, path, len(body)) + body)
                elif sel == 1:
                    # Head with the start of the body, then the rest in two writes.
                    kind, path = "raw-post-split-body", "/echo"
                    body = post_body(n, 3000 + n % 5000)
                    msg = post_head(host, port, path, len(body)) + body
                    cut = len(msg) - len(body) + 100
                    s.sendall(msg[:cut])
                    s.sendall(msg[cut:cut + 1000])
                    s.sendall(msg[cut + 1000:])
                elif sel == 2:
                    kind, path, body = "raw-get", "/small/%d" % n, None
                    s.sendall(get_head(host, port, path))
                elif sel == 3:
                    # Expect: 100-continue: the head, the interim answer, then the body.
                    kind, path = "raw-post-expect-100", "/echo"
                    body = post_body(n, 2000 + n % 3000)
                    s.sendall(post_head(host, port, path, len(body), "Expect: 100-continue\r\n"))
                    status, data = read_response(f, head=True)
                    if status != 100:
                        raise Failure("%s: %d instead of 100 Continue" % (kind, status))
                    s.sendall(body)
                elif sel == 4:
                    # The end of a body and the next request's head in one write (editing stops
                    # on this connection).
                    kind, path = "raw-post-then-get", "/echo"
                    body = post_body(n, 500 + n % 1000)
                    follow = "/small/%d" % n
                    s.sendall(post_head(host, port, path, len(body)) + body[:200])
                    s.sendall(body[200:] + get_head(host, port, follow))
                else:
                    # A head split over two writes (editing stops on this connection).
                    kind, path, body = "raw-get-split-head", "/small/%d" % n, None
                    head = get_head(host, port, path, "X-Split: yes\r\n")
                    s.sendall(head[:30])
                    s.sendall(head[30:])
                status, data = read_response(f)
                out.append(line(kind, path, status, data))
                expect_status(kind, path, status)
                if body is not None:
                    check_echo(kind, path, data, body)
                else:
                    check_get(kind, path, data)
                if follow is not None:
                    status, data = read_response(f)
                    out.append(line(kind + "-next", follow, status, data))
                    expect_status(kind, follow, status)
                    check_get(kind, follow, data)
        except Exception as e:
            failures.append("raw connection %d: %r" % (c, e))
        finally:
            f.close()
            s.close()


def client(host, port, out_path):
    jobs = [(worker, (host, port, w)) for w in range(WORKERS)]
    jobs += [(pipeliner, (host, port)), (raw, (host, port))]
    outs = [[] for _ in jobs]
    fails = [[] for _ in jobs]
    threads = [threading.Thread(target=fn, args=args + (outs[k], fails[k]))
               for k, (fn, args) in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failures = [x for f in fails for x in f]
    with open(out_path, "w") as o:
        for lines in outs:
            for l in lines:
                o.write(l + "\n")
        o.write("failures %d\n" % len(failures))
    for x in failures:
        sys.stderr.write("FAILED %s\n" % x)
    print("requests %d failures %d" % (sum(len(l) for l in outs), len(failures)), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve()
    else:
        client(sys.argv[2], int(sys.argv[3]), sys.argv[4])
