"""The node's proxy to the host's loopback: listeners opened inside a network namespace, connections
made from the host's. Here the namespace is this process's own (entering it needs root, as the real
node does), so the forwarding itself is what is tested."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from collections.abc import Iterator

import pytest

from kubetune_dev.netns_proxy import Forward, serve
from kubetune_dev.preflight import free_ports

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="entering a network namespace needs root")


def test_forward_parses_listen_and_target() -> None:
    fwd = Forward.parse("10.245.3.2:6443=127.0.0.1:38211")
    assert (fwd.listen_host, fwd.listen_port, fwd.target) == ("10.245.3.2", 6443, ("127.0.0.1", 38211))
    with pytest.raises(ValueError):
        Forward.parse("6443")


@pytest.fixture
def echo_server() -> Iterator[int]:
    """Answers each connection with what it read, upper-cased, once the client half-closed."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def loop() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
                conn.sendall(data.upper())

    threading.Thread(target=loop, daemon=True).start()
    yield int(server.getsockname()[1])
    server.close()


def test_bytes_flow_both_ways_with_half_close(echo_server: int) -> None:
    (listen_port,) = free_ports(1)
    ready = f"/tmp/netns-proxy-ready-{os.getpid()}"
    forward = Forward("127.0.0.1", listen_port, "127.0.0.1", echo_server)
    loop = asyncio.new_event_loop()
    task = loop.create_task(serve("/proc/self/ns/net", [forward], ready))

    def run() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(task)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if os.path.exists(ready):
                break
            threading.Event().wait(0.05)
        payload = b"kubetune " * 20000  # larger than one read
        with socket.create_connection(("127.0.0.1", listen_port), timeout=10) as client:
            client.sendall(payload)
            client.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := client.recv(65536):
                answer += chunk
        assert answer == payload.upper()
    finally:
        loop.call_soon_threadsafe(task.cancel)
        thread.join(timeout=10)
        os.unlink(ready)
