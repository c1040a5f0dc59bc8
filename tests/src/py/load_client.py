# THREADS threads started together, each sending PER requests `GET /req/PREFIX<T>-<I>` on one
# keep-alive connection to HOST:PORT. Every answer must be 200 with the body the leaf server
# gives for that token, `leaf /leaf/req/PREFIX<T>-<I>`. Prints `ok N` (N requests) or the
# failures, exit status 1.
#
# usage: load_client.py HOST PORT THREADS PER [PREFIX (default t)]
import http.client, sys, threading

host, port, threads, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
prefix = sys.argv[5] if len(sys.argv) > 5 else "t"
errors = []
start = threading.Barrier(threads)


def run(t):
    c = http.client.HTTPConnection(host, port, timeout=30)
    start.wait()
    for i in range(per):
        path = "/req/%s%d-%d" % (prefix, t, i)
        try:
            c.request("GET", path)
            r = c.getresponse()
            body = r.read()
        except Exception as e:
            errors.append("%s: %r" % (path, e))
            return
        want = ("leaf /leaf%s\n" % path).encode()
        if r.status != 200 or body != want:
            errors.append("%s: %d %r" % (path, r.status, body))
    c.close()


ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
for t in ts:
    t.start()
for t in ts:
    t.join()
if errors:
    print("\n".join(errors), flush=True)
    sys.exit(1)
print("ok %d" % (threads * per), flush=True)
