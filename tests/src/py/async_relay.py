# An HTTP/1.1 server on one asyncio event loop (a single thread serving every connection) that,
# while serving `GET PATH`, calls `GET PREFIX+PATH` on a downstream server (a new connection each
# time) and answers with what it got. Prints `LISTENING port N` once listening.
#
# usage: async_relay.py --downstream HOST:PORT [--prefix /leaf]
import argparse, asyncio, sys

ap = argparse.ArgumentParser()
ap.add_argument("--bind", default="127.0.0.1")
ap.add_argument("--downstream", required=True)
ap.add_argument("--prefix", default="/leaf")
args = ap.parse_args()
down_host, down_port = args.downstream.rsplit(":", 1)
down_port = int(down_port)


async def fetch(path):
    r, w = await asyncio.open_connection(down_host, down_port)
    w.write(("GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n"
             % (path, down_host, down_port)).encode())
    await w.drain()
    # Connection: close: the response ends with the connection.
    data = await r.read()
    w.close()
    await w.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b"\r\n", 1)[0].split(b" ")[1].decode()
            status, body = await fetch(args.prefix + path)
            writer.write(b"HTTP/1.1 %d OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"
                         % (status, len(body)) + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    except Exception as e:
        sys.stderr.write("handler failed: %r\n" % e)
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(handle, args.bind, 0)
    print("LISTENING port %d" % server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
