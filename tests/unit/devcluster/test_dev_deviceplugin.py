"""The fake-GPU device plugin over real gRPC on unix sockets, with the test playing the kubelet:
registration, re-registration after a kubelet restart, ListAndWatch, preferred allocation and
Allocate. Plus the generated gRPC code's drift check against the vendored api.proto."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from kubetune_dev import deviceplugin
from kubetune_dev.deviceplugin_api import api_pb2 as api
from kubetune_dev.deviceplugin_api import api_pb2_grpc as api_grpc
from kubetune_dev.testing import poll

API_DIR = Path(deviceplugin.__file__).parent / "deviceplugin_api"


class Kubelet(api_grpc.RegistrationServicer):
    """The kubelet's side of registration: records each RegisterRequest."""

    def __init__(self) -> None:
        self.requests: list[Any] = []

    def Register(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.requests.append(request)
        return api.Empty()


def serve_kubelet(plugin_dir: Path) -> tuple[Kubelet, Any]:
    kubelet = Kubelet()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    api_grpc.add_RegistrationServicer_to_server(kubelet, server)
    server.add_insecure_port(f"unix://{plugin_dir / deviceplugin.KUBELET_SOCKET}")
    server.start()
    return kubelet, server


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    # Short: unix socket paths stop at 108 bytes, and pytest's temporary directories are deep.
    directory = Path("/tmp") / f"ktdp-{os.getpid()}-{tmp_path.name[-8:]}"
    directory.mkdir()
    yield directory  # type: ignore[misc]
    for child in directory.iterdir():
        child.unlink()
    directory.rmdir()


@pytest.fixture
def running_plugin(plugin_dir: Path) -> Iterator[tuple[Kubelet, Any, grpc.Channel]]:
    kubelet, server = serve_kubelet(plugin_dir)
    stop = threading.Event()
    thread = threading.Thread(target=deviceplugin.run, args=(plugin_dir, 4, "nvidia.com/gpu", stop), daemon=True)
    thread.start()
    poll("the plugin registers", lambda: kubelet.requests, timeout=30)
    channel = grpc.insecure_channel(f"unix://{plugin_dir / deviceplugin.PLUGIN_SOCKET}")
    yield kubelet, server, channel
    channel.close()
    stop.set()
    thread.join(timeout=10)
    server.stop(grace=None)


def test_registers_with_the_kubelet_under_v1beta1(running_plugin: tuple[Kubelet, Any, grpc.Channel]) -> None:
    kubelet, _, _ = running_plugin
    (request,) = kubelet.requests
    assert request.version == "v1beta1"
    assert request.endpoint == "kubetune-gpu.sock"
    assert request.resource_name == "nvidia.com/gpu"
    assert request.options.get_preferred_allocation_available is True


def test_lists_four_healthy_devices_and_allocates_like_nvidias_plugin(
    running_plugin: tuple[Kubelet, Any, grpc.Channel],
) -> None:
    _, _, channel = running_plugin
    plugin = api_grpc.DevicePluginStub(channel)
    options = plugin.GetDevicePluginOptions(api.Empty(), timeout=10)
    assert options.pre_start_required is False and options.get_preferred_allocation_available is True
    stream = plugin.ListAndWatch(api.Empty(), timeout=10)
    first = next(stream)
    assert [(d.ID, d.health) for d in first.devices] == [(str(i), "Healthy") for i in range(4)]
    stream.cancel()
    answer = plugin.Allocate(
        api.AllocateRequest(
            container_requests=[
                api.ContainerAllocateRequest(devices_ids=["3", "1"]),
                api.ContainerAllocateRequest(devices_ids=["0"]),
            ]
        ),
        timeout=10,
    )
    assert [dict(r.envs) for r in answer.container_responses] == [
        {"CUDA_VISIBLE_DEVICES": "1,3", "NVIDIA_VISIBLE_DEVICES": "1,3"},
        {"CUDA_VISIBLE_DEVICES": "0", "NVIDIA_VISIBLE_DEVICES": "0"},
    ]
    with pytest.raises(grpc.RpcError) as refused:
        plugin.Allocate(api.AllocateRequest(container_requests=[api.ContainerAllocateRequest(devices_ids=["7"])]))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    preferred = plugin.GetPreferredAllocation(
        api.PreferredAllocationRequest(
            container_requests=[
                api.ContainerPreferredAllocationRequest(
                    available_deviceIDs=["3", "2", "1"], must_include_deviceIDs=["3"], allocation_size=2
                )
            ]
        ),
        timeout=10,
    )
    assert list(preferred.container_responses[0].deviceIDs) == ["3", "1"]


def test_registers_again_when_the_kubelet_restarts(
    plugin_dir: Path, running_plugin: tuple[Kubelet, Any, grpc.Channel]
) -> None:
    kubelet, server, _ = running_plugin
    # A starting kubelet removes the plugins' sockets and serves a new kubelet.sock.
    server.stop(grace=None)
    for child in plugin_dir.iterdir():
        child.unlink()
    restarted, new_server = serve_kubelet(plugin_dir)
    try:
        request = poll("registration with the restarted kubelet", lambda: restarted.requests, timeout=30)[0]
        assert request.endpoint == "kubetune-gpu.sock"
        assert (plugin_dir / deviceplugin.PLUGIN_SOCKET).exists()
    finally:
        new_server.stop(grace=None)
    assert len(kubelet.requests) == 1


def test_preferred_allocation_takes_required_devices_then_the_lowest_free() -> None:
    assert deviceplugin.preferred(["0", "1", "2", "3"], [], 2) == ["0", "1"]
    assert deviceplugin.preferred(["1", "10", "2"], ["10"], 2) == ["10", "1"]
    assert deviceplugin.preferred(["2"], ["2"], 1) == ["2"]


def test_generated_grpc_code_matches_the_vendored_proto(tmp_path: Path) -> None:
    """The checked-in *_pb2*.py are what grpcio-tools (pinned in the dev extra) makes of api.proto."""
    out = tmp_path / "out"
    target = out / "kubetune_dev" / "deviceplugin_api"
    target.mkdir(parents=True)
    (target / "api.proto").write_bytes((API_DIR / "api.proto").read_bytes())
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{out}", f"--python_out={out}", f"--pyi_out={out}",
         f"--grpc_python_out={out}", "kubetune_dev/deviceplugin_api/api.proto"],
        check=True,
    )  # fmt: skip
    for name in ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py"):
        assert filecmp.cmp(target / name, API_DIR / name, shallow=False), (
            f"{name} is stale: regenerate it (devcluster/kubetune_dev/deviceplugin_api/README.md)"
        )


def test_vendored_proto_is_the_kubelets_own() -> None:
    """api.proto is k8s.io/kubelet's at the Kubernetes version the node runs (in the Go module cache
    once hack/build-binaries.sh built the kubelet)."""
    modcache = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True).stdout.strip()
    upstream = Path(modcache) / "k8s.io/kubelet@v0.34.4/pkg/apis/deviceplugin/v1beta1/api.proto"
    if not upstream.exists():
        pytest.skip(f"{upstream} is not in the Go module cache (hack/build-binaries.sh puts it there)")
    assert (API_DIR / "api.proto").read_bytes() == upstream.read_bytes()
