# A thread-per-connection HTTP/1.1 server that, while serving `GET /key/NAME`, reads NAME from
# Redis (one connection per server thread) and answers its value (404 when absent).
# Prints `LISTENING port N` once listening.
#
# usage: redis_http.py REDIS_PORT
import http.server, sys, threading, warnings

warnings.simplefilter("ignore")
import redis  # noqa: E402

REDIS_PORT = int(sys.argv[1])
local = threading.local()


def db():
    # Only the GETs: no CLIENT SETINFO, HELLO or CLIENT MAINT_NOTIFICATIONS on connect.
    if not hasattr(local, "r"):
        extra = {}
        try:
            from redis.maint_notifications import MaintNotificationsConfig

            extra["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
        except ImportError:
            pass
        local.r = redis.Redis(
            port=REDIS_PORT, protocol=2, lib_name=None, lib_version=None, **extra
        )
    return local.r


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *a):
        sys.stderr.write("%s %s\n" % (self.address_string(), fmt % a))

    def do_GET(self):
        value = db().get(self.path.rsplit("/", 1)[-1])
        body = value or b"absent\n"
        self.send_response(200 if value else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print("LISTENING port %d" % srv.server_address[1], flush=True)
srv.serve_forever()
