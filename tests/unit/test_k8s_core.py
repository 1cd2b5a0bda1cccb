"""The shared core of kubetune's Kubernetes clients: one error family, paths, credentials that refresh."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kubetune.k8s.core import (
    AlreadyExists,
    ApiError,
    Conflict,
    Credentials,
    Gone,
    NotFound,
    Unauthorized,
    api_error,
    decode,
    object_path,
    resource_path,
)


@pytest.mark.parametrize(("status", "reason", "kind"), [
    (404, "NotFound", NotFound), (409, "AlreadyExists", AlreadyExists), (409, "Conflict", Conflict),
    (410, "Expired", Gone), (401, "Unauthorized", Unauthorized), (403, "Forbidden", ApiError),
    (500, "InternalError", ApiError),
])
def test_each_status_maps_to_one_error_kind(status: int, reason: str, kind: type[ApiError]) -> None:
    error = api_error(status, {"reason": reason, "message": "m"})
    assert type(error) is kind and isinstance(error, ApiError)
    assert (error.status, error.reason, error.message) == (status, reason, "m")


def test_decode_wraps_lists_and_raises_for_errors() -> None:
    assert decode(200, b'[1, 2]') == {"items": [1, 2]}
    assert decode(200, b"") == {}
    with pytest.raises(NotFound) as raised:
        decode(404, b'{"kind": "Status", "reason": "NotFound", "message": "pods \\"x\\" not found"}')
    assert raised.value.body["kind"] == "Status"
    with pytest.raises(ApiError, match="502 : bad gateway"):
        decode(502, b"bad gateway")


def test_paths() -> None:
    assert resource_path("", "v1", "pods", "ns", "p", "status") == "/api/v1/namespaces/ns/pods/p/status"
    trials = resource_path("kubetune.io", "v1alpha1", "trials", "a b")
    assert trials == "/apis/kubetune.io/v1alpha1/namespaces/a%20b/trials"
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "system:x"}}
    assert object_path(role) == "/apis/rbac.authorization.k8s.io/v1/clusterroles/system:x"
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "n"}}
    assert object_path(service) == "/api/v1/namespaces/n/services/s"


def test_an_expired_exec_credential_is_fetched_again(tmp_path: Path) -> None:
    """kubernetes.config's refresh hook runs the plugin again once the credential it gave has expired."""
    token, expiry, calls = tmp_path / "token", tmp_path / "expiry", tmp_path / "calls"
    plugin = tmp_path / "plugin"
    plugin.write_text(
        f"#!/bin/sh\necho x >> {calls}\n"
        "printf '{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\","
        f"\"status\":{{\"token\":\"%s\",\"expirationTimestamp\":\"%s\"}}}}' \"$(cat {token})\" \"$(cat {expiry})\"\n"
    )
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1", "command": str(plugin), "interactiveMode": "Never"}}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))

    def stamp(delta: timedelta) -> str:
        return (datetime.now(UTC) + delta).strftime("%Y-%m-%dT%H:%M:%SZ")

    token.write_text("one")
    expiry.write_text(stamp(timedelta(hours=1)))
    credentials = Credentials.load(kubeconfig)
    assert credentials.headers() == {"Authorization": "Bearer one"}
    token.write_text("two")
    assert credentials.bearer() == "one"  # still valid: not asked again
    runs = len(calls.read_text().split())

    # A credential past its expiry (within kubernetes.config's 5-minute skew) is fetched again.
    token.write_text("three")
    expiry.write_text(stamp(timedelta(seconds=30)))
    short_lived = credentials.reload()
    assert short_lived.bearer() == "three"
    token.write_text("four")
    assert short_lived.bearer() == "four"  # the refresh hook, no reload
    assert len(calls.read_text().split()) > runs + 1


def test_a_token_file_is_read_again_after_a_minute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = tmp_path / "token"
    token.write_text("one\n")
    now = [1000.0]
    monkeypatch.setattr("kubetune.k8s.core.time.monotonic", lambda: now[0])
    credentials = Credentials(server="https://127.0.0.1:1", token_file=str(token))
    assert credentials.bearer() == "one"
    token.write_text("two")
    now[0] += 30
    assert credentials.bearer() == "one"
    now[0] += 31
    assert credentials.bearer() == "two"
