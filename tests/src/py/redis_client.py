"""Redis client scenarios of the integration tests (redis-py), one per mode:

  simple PORT RESP       SET, GET, a WRONGTYPE error, CLIENT SETNAME, SELECT 3 then GET
  pipeline PORT N        N SETs in one pipeline (no transaction), then their replies
  multi PORT             MULTI, SET, INCR, EXEC (a transaction pipeline)
  pubsub PORT RESP       SUBSCRIBE on one connection, 3 PUBLISHes on another, the subscriber reads
                         them, PINGs and UNSUBSCRIBEs
  blpop PORT MS          BLPOP on one connection, answered by an RPUSH from another MS later
  before PORT            PING, print READY, wait for a line on stdin, then GET and SET

Prints `DONE` when every reply was as expected (it exits non-zero otherwise).
"""
import sys
import threading
import time
import warnings

warnings.simplefilter("ignore")
import redis  # noqa: E402


def client(port, resp=2):
    # No CLIENT SETINFO nor CLIENT MAINT_NOTIFICATIONS on connect: the commands sent are exactly
    # the scenario's (and HELLO 3 for RESP3).
    extra = {}
    try:
        from redis.maint_notifications import MaintNotificationsConfig

        extra["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
    except ImportError:
        pass
    return redis.Redis(port=port, protocol=resp, lib_name=None, lib_version=None, **extra)


def main():
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "simple":
        r = client(port, int(sys.argv[3]))
        assert r.set("greeting", "hello")
        assert r.get("greeting") == b"hello"
        try:
            r.lpush("greeting", "x")
            raise SystemExit("LPUSH on a string did not fail")
        except redis.ResponseError as e:
            assert str(e).startswith("WRONGTYPE"), e
        assert r.client_setname("tester")
        assert r.execute_command("SELECT", 3)
        assert r.get("greeting") is None
    elif mode == "pipeline":
        n = int(sys.argv[3])
        r = client(port)
        p = r.pipeline(transaction=False)
        for i in range(n):
            p.set(f"k{i}", f"v{i}")
        assert p.execute() == [True] * n
    elif mode == "multi":
        r = client(port)
        p = r.pipeline(transaction=True)
        p.set("counter", 1)
        p.incr("counter")
        assert p.execute() == [True, 2]
    elif mode == "pubsub":
        resp = int(sys.argv[3])
        sub = client(port, resp).pubsub()
        sub.subscribe("news")
        confirm = sub.get_message(timeout=5)
        assert confirm and confirm["type"] == "subscribe", confirm
        pub = client(port, resp)
        for i in range(3):
            assert pub.publish("news", f"item {i}") == 1
        got = []
        while len(got) < 3:
            m = sub.get_message(timeout=5)
            assert m is not None, got
            if m["type"] == "message":
                got.append(m["data"])
        assert got == [b"item 0", b"item 1", b"item 2"], got
        sub.ping()
        pong = sub.get_message(timeout=5)
        assert pong and pong["type"] == "pong", pong
        sub.unsubscribe("news")
        gone = sub.get_message(timeout=5)
        assert gone and gone["type"] == "unsubscribe", gone
    elif mode == "blpop":
        delay = int(sys.argv[3]) / 1000
        waiter = client(port)
        pusher = client(port)
        pusher.delete("queue")

        def push():
            time.sleep(delay)
            pusher.rpush("queue", "job")

        t = threading.Thread(target=push)
        t.start()
        assert waiter.blpop("queue", timeout=10) == (b"queue", b"job")
        t.join()
    elif mode == "before":
        r = client(port)
        assert r.ping()
        print("READY", flush=True)
        sys.stdin.readline()
        assert r.get("early") is None
        assert r.set("early", "bird")
    else:
        raise SystemExit(f"unknown mode {mode}")
    print("DONE", flush=True)


main()
