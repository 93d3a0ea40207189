#!/usr/bin/env python3
"""Plays kube-proxy for one Service: accepts TCP on the `kubernetes`
Service's cluster IP and relays each connection to the sandbox API server on
127.0.0.1.

A pod reaches the API server at KUBERNETES_SERVICE_HOST:443, a cluster IP
that kube-proxy routes. The sandbox has no kube-proxy, and the operator run
by tests/chart/in-cluster.sh sits in its own network namespace, where the
host's 127.0.0.1 is out of reach; this relay listens on the cluster IP
(an address in-cluster.sh puts on the host end of the namespace's veth, so
it is reachable from the namespace and from nowhere else). TLS passes
through untouched: the operator still checks the API server's certificate,
which names the cluster IP.

usage: service_vip.py LISTEN_IP LISTEN_PORT TARGET_PORT
Prints "listening" once the socket is bound.
"""
import asyncio
import sys


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def relay(target_port, client_reader, client_writer):
    try:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target_port)
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(
        pipe(client_reader, server_writer), pipe(server_reader, client_writer)
    )


async def main():
    listen_ip, listen_port, target_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    server = await asyncio.start_server(
        lambda r, w: relay(target_port, r, w), listen_ip, listen_port
    )
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
