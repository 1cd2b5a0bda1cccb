"""The node agent's pod watch: expired watches and API outages lead to a relist, never a crash."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kubetune.k8s.sync import ApiError
from kubetune_dev.agent import Agent, AgentOptions


class FakeApi:
    server = "https://127.0.0.1:6443"

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.lists = 0
        self.watches: list[str] = []

    def get(self, path: str, **query: Any) -> dict[str, Any]:
        self.lists += 1
        if self.lists == 2:
            raise ApiError(0, "ConnectionError", "connection refused")  # API server restarting
        pod = {"metadata": {"uid": f"u{self.lists}", "name": "p", "namespace": "ns", "resourceVersion": "1"}}
        return {"metadata": {"resourceVersion": str(self.lists * 10)}, "items": [pod]}

    def watch(self, path: str, **query: Any) -> Iterator[dict[str, Any]]:
        self.watches.append(query["resourceVersion"])
        if len(self.watches) == 1:
            yield {"type": "ADDED", "object": {"metadata": {"uid": "x", "resourceVersion": "11"}}}
            raise ApiError(410, "Expired", "too old resource version")
        self.stop.set()
        yield from ()


def test_watch_relists_after_410_and_connection_errors(tmp_path: Path) -> None:
    opts = AgentOptions(
        kubeconfig=tmp_path / "k", node_name="n", gpus=1, state_dir=tmp_path, pods_dir=tmp_path / "pods"
    )
    stop = threading.Event()
    api = FakeApi(stop)
    agent = Agent(opts, api)  # type: ignore[arg-type]
    agent.stop = stop
    agent.watch_pods()

    kinds = []
    while not agent.events.empty():
        kinds.append(agent.events.get()[0])
    # list -> watch (one event, then 410) -> list fails -> back off -> list -> watch
    assert kinds == ["relist", "pod", "relist"]
    assert api.lists == 3
    assert api.watches == ["10", "30"]
