"""Carry TCP connections from addresses inside a network namespace to the host's loopback.

    python -m kubetune_dev.netns_proxy --netns /run/netns/kubetune-ID \
        --forward 127.0.0.1:6443=127.0.0.1:6443 --forward 10.245.3.2:6443=127.0.0.1:6443

The real node lives in its own network namespace (realnode.py), while the API server (and the
local registry) listen on the host's loopback only. This process opens its listening sockets inside
the node's namespace and connects out from the host's, so the kubelet, kube-proxy and pods reach the
API server without it listening anywhere but loopback. A socket belongs to the namespace it was
created in, whichever namespace the thread is in later.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass

log = logging.getLogger("kubetune_dev.netns_proxy")
CLONE_NEWNET = 0x40000000
BUFFER = 64 * 1024


@dataclass(frozen=True)
class Forward:
    listen_host: str
    listen_port: int
    target_host: str
    target_port: int

    @property
    def target(self) -> tuple[str, int]:
        return self.target_host, self.target_port

    @classmethod
    def parse(cls, text: str) -> Forward:
        listen, _, target = text.partition("=")
        lh, _, lp = listen.rpartition(":")
        th, _, tp = target.rpartition(":")
        if not (lh and lp and th and tp):
            raise ValueError(f"expected LISTEN_HOST:PORT=TARGET_HOST:PORT, got {text!r}")
        return cls(lh, int(lp), th, int(tp))


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


@contextlib.contextmanager
def inside_netns(path: str) -> Iterator[None]:
    """Run the block with this thread in the namespace at `path`, then come back."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(path, os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


def listen_in(netns: str, forwards: list[Forward]) -> list[socket.socket]:
    sockets = []
    with inside_netns(netns):
        for fwd in forwards:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((fwd.listen_host, fwd.listen_port))
            sock.listen(512)
            sock.setblocking(False)
            sockets.append(sock)
    return sockets


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(BUFFER):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # half-close: the other direction may still be talking
    except (ConnectionError, OSError):
        writer.close()


async def _serve_connection(fwd: Forward, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        up_reader, up_writer = await asyncio.open_connection(fwd.target_host, fwd.target_port)
    except OSError as exc:
        log.warning("cannot reach %s:%d: %s", fwd.target_host, fwd.target_port, exc)
        writer.close()
        return
    try:
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
    finally:
        for w in (writer, up_writer):
            w.close()


async def serve(netns: str, forwards: list[Forward], ready_file: str | None = None) -> None:
    """Forward until cancelled."""
    sockets = listen_in(netns, forwards)
    servers = []
    try:
        for fwd, sock in zip(forwards, sockets, strict=True):

            async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, fwd: Forward = fwd) -> None:
                await _serve_connection(fwd, reader, writer)

            servers.append(await asyncio.start_server(handle, sock=sock))
            log.info("forwarding %s:%d (in %s) -> %s:%d", fwd.listen_host, fwd.listen_port, netns, *fwd.target)
        if ready_file:
            with open(ready_file, "w") as out:
                out.write("ready\n")
        await asyncio.Event().wait()
    finally:
        for server in servers:
            server.close()


async def _run_until_signalled(netns: str, forwards: list[Forward], ready_file: str | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(serve(netns, forwards, ready_file))
    done, _ = await asyncio.wait([task, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # a listener that failed to open: raise it
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubetune_dev.netns_proxy", description=__doc__.splitlines()[0])
    parser.add_argument("--netns", required=True, help="network namespace file, e.g. /run/netns/NAME")
    parser.add_argument(
        "--forward",
        action="append",
        type=Forward.parse,
        required=True,
        help="LISTEN_HOST:PORT=TARGET_HOST:PORT (listen inside the namespace, connect from the host)",
    )
    parser.add_argument("--ready-file", help="written once every listener is open")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(_run_until_signalled(args.netns, args.forward, args.ready_file))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
