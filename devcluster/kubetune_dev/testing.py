"""Helpers for tests that run against the dev cluster (used by tests/e2e/conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from kubernetes import client, config

T = TypeVar("T")


@dataclass(frozen=True)
class Kube:
    """Typed API clients sharing one connection pool."""

    api_client: client.ApiClient
    core: client.CoreV1Api
    batch: client.BatchV1Api
    apps: client.AppsV1Api
    custom: client.CustomObjectsApi

    @classmethod
    def from_kubeconfig(cls, kubeconfig: Path) -> Kube:
        api_client = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
        return cls(
            api_client=api_client,
            core=client.CoreV1Api(api_client),
            batch=client.BatchV1Api(api_client),
            apps=client.AppsV1Api(api_client),
            custom=client.CustomObjectsApi(api_client),
        )

    def close(self) -> None:
        self.api_client.close()  # type: ignore[no-untyped-call]


def poll(what: str, probe: Callable[[], T | None], timeout: float = 120.0, interval: float = 0.3) -> T:
    """Call `probe` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
