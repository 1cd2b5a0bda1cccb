"""A device plugin advertising fake `nvidia.com/gpu` devices to the real node's kubelet.

    python -m kubetune_dev.deviceplugin --plugin-dir DIR --count 4

It speaks the kubelet's device-plugin API v1beta1 (deviceplugin_api/, generated from upstream's
api.proto) over unix sockets in DIR — the directory the node sees at
/var/lib/kubelet/device-plugins: serves DevicePlugin on `kubetune-gpu.sock`, registers it with the
kubelet's `kubelet.sock`, and re-registers whenever the kubelet restarts (a kubelet wipes the
directory's sockets when it starts). The kubelet's device manager then does the accounting and the
assignment, as on a GPU node: devices are `0`..`count-1` (NVIDIA's plugin with
`--device-id-strategy=index`), and Allocate answers with NVIDIA_VISIBLE_DEVICES and
CUDA_VISIBLE_DEVICES for the devices the kubelet chose, the same variables the node agent sets.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from kubetune_dev.deviceplugin_api import api_pb2 as api
from kubetune_dev.deviceplugin_api import api_pb2_grpc as api_grpc
from kubetune_dev.podspec import gpu_env
from kubetune_dev.procs import watch_owner

log = logging.getLogger("kubetune_dev.deviceplugin")
API_VERSION = "v1beta1"
KUBELET_SOCKET = "kubelet.sock"
PLUGIN_SOCKET = "kubetune-gpu.sock"
HEALTHY = "Healthy"


def device_ids(count: int) -> list[str]:
    return [str(i) for i in range(count)]


def allocation_env(ids: list[str]) -> dict[str, str]:
    """The environment one container gets for the devices assigned to it (lowest index first)."""
    return gpu_env(sorted(int(i) for i in ids))


def preferred(available: list[str], must_include: list[str], size: int) -> list[str]:
    """Required devices first, then the lowest free indices: the same choice the node agent makes."""
    chosen = list(dict.fromkeys(must_include))
    for device in sorted(available, key=int):
        if len(chosen) >= size:
            break
        if device not in chosen:
            chosen.append(device)
    return chosen[:size]


class FakeGpuPlugin(api_grpc.DevicePluginServicer):
    def __init__(self, count: int, stop: threading.Event) -> None:
        self.devices = device_ids(count)
        self.stop = stop

    def GetDevicePluginOptions(self, request: api.Empty, context: grpc.ServicerContext) -> api.DevicePluginOptions:
        return api.DevicePluginOptions(pre_start_required=False, get_preferred_allocation_available=True)

    def ListAndWatch(self, request: api.Empty, context: grpc.ServicerContext) -> Iterator[api.ListAndWatchResponse]:
        # Fake devices never turn unhealthy: one list, then hold the stream open as long as the kubelet does.
        yield api.ListAndWatchResponse(devices=[api.Device(ID=d, health=HEALTHY) for d in self.devices])
        while context.is_active() and not self.stop.wait(1.0):
            pass

    def GetPreferredAllocation(
        self, request: api.PreferredAllocationRequest, context: grpc.ServicerContext
    ) -> api.PreferredAllocationResponse:
        return api.PreferredAllocationResponse(
            container_responses=[
                api.ContainerPreferredAllocationResponse(
                    deviceIDs=preferred(list(r.available_deviceIDs), list(r.must_include_deviceIDs), r.allocation_size)
                )
                for r in request.container_requests
            ]
        )

    def Allocate(self, request: api.AllocateRequest, context: grpc.ServicerContext) -> api.AllocateResponse:
        responses = []
        for container in request.container_requests:
            unknown = [d for d in container.devices_ids if d not in self.devices]
            if unknown:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown devices {unknown}")
            env = allocation_env(list(container.devices_ids))
            log.info("allocate %s -> %s", list(container.devices_ids), env)
            responses.append(api.ContainerAllocateResponse(envs=env))
        return api.AllocateResponse(container_responses=responses)

    def PreStartContainer(
        self, request: api.PreStartContainerRequest, context: grpc.ServicerContext
    ) -> api.PreStartContainerResponse:
        return api.PreStartContainerResponse()


def serve(plugin_dir: Path, plugin: FakeGpuPlugin) -> Any:
    socket_path = plugin_dir / PLUGIN_SOCKET
    socket_path.unlink(missing_ok=True)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    api_grpc.add_DevicePluginServicer_to_server(plugin, server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(f"unix://{socket_path}")
    server.start()
    return server


def register(plugin_dir: Path, resource: str, timeout: float = 10.0) -> None:
    with grpc.insecure_channel(f"unix://{plugin_dir / KUBELET_SOCKET}") as channel:
        api_grpc.RegistrationStub(channel).Register(  # type: ignore[no-untyped-call]
            api.RegisterRequest(
                version=API_VERSION,
                endpoint=PLUGIN_SOCKET,
                resource_name=resource,
                options=api.DevicePluginOptions(get_preferred_allocation_available=True),
            ),
            timeout=timeout,
        )


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def run(plugin_dir: Path, count: int, resource: str, stop: threading.Event) -> None:
    """Serve and register; start over whenever the kubelet's socket is new or ours was removed."""
    registered_with: int | None = None
    server: Any = None
    while not stop.is_set():
        kubelet = _inode(plugin_dir / KUBELET_SOCKET)
        if kubelet is not None and (kubelet != registered_with or _inode(plugin_dir / PLUGIN_SOCKET) is None):
            if server is not None:
                server.stop(grace=None)
            server = serve(plugin_dir, FakeGpuPlugin(count, stop))
            try:
                register(plugin_dir, resource)
            except grpc.RpcError as exc:
                log.warning("registration with the kubelet failed (retrying): %s", exc)
            else:
                registered_with = kubelet
                log.info("registered %d %s devices with the kubelet", count, resource)
        stop.wait(1.0)
    if server is not None:
        server.stop(grace=1.0)
    (plugin_dir / PLUGIN_SOCKET).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubetune_dev.deviceplugin", description=__doc__.splitlines()[0])
    parser.add_argument("--plugin-dir", type=Path, required=True, help="the kubelet's device-plugins directory")
    parser.add_argument("--count", type=int, default=4, help="number of fake devices (default 4)")
    parser.add_argument("--resource", default="nvidia.com/gpu")
    parser.add_argument("--owner", default="", help="pid:starttime; tear the cluster down when it exits")
    parser.add_argument("--cluster-home", type=Path, help="the cluster to tear down (with --owner)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if args.owner and args.cluster_home:
        threading.Thread(target=watch_owner, args=(args.owner, args.cluster_home, stop), daemon=True).start()
    run(args.plugin_dir, args.count, args.resource, stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
