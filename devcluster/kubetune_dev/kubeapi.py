"""A small JSON client for the Kubernetes REST API, used by the node agent and the dev cluster.

Why not the generated `kubernetes` client directly: the agent works on plain dicts (it patches
status, never round-trips typed models), needs explicit timeouts on every call so a hung API
server cannot hang it, and must survive watch expiry and restarts; the generated client's API
changes between major versions. We still use `kubernetes.config` to read kubeconfigs.
"""

from __future__ import annotations

import json
import logging
import ssl
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import urllib3

log = logging.getLogger(__name__)

JSON = dict[str, Any]
PatchType = Literal["strategic", "merge", "json"]

_PATCH_CONTENT_TYPES: dict[str, str] = {
    "strategic": "application/strategic-merge-patch+json",
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
}


class ApiError(Exception):
    """A non-2xx answer, or a failed connection (status 0)."""

    def __init__(self, status: int, reason: str, message: str, body: JSON | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body or {}

    @property
    def is_not_found(self) -> bool:
        return self.status == 404

    @property
    def is_conflict(self) -> bool:
        return self.status == 409

    @property
    def is_gone(self) -> bool:
        return self.status == 410


@dataclass(frozen=True)
class Credentials:
    server: str
    ca_file: str | None
    cert_file: str | None
    key_file: str | None
    authorization: str | None
    verify: bool = True


def load_credentials(kubeconfig: Path | None, temp_dir: Path | None = None) -> Credentials:
    """Read a kubeconfig. Embedded certificates are written to files by `kubernetes.config`; pass
    `temp_dir` to keep them out of /tmp (a SIGKILLed process cannot clean them up)."""
    from kubernetes import client, config

    cfg = client.Configuration()
    if kubeconfig is None:
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    else:
        if temp_dir is not None:
            temp_dir.mkdir(parents=True, exist_ok=True)
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig),
            client_configuration=cfg,
            temp_file_path=str(temp_dir) if temp_dir is not None else None,
        )
    api_key: Mapping[str, str] = cfg.api_key or {}
    return Credentials(
        server=str(cfg.host).rstrip("/"),
        ca_file=cfg.ssl_ca_cert,
        cert_file=cfg.cert_file,
        key_file=cfg.key_file,
        authorization=api_key.get("authorization") or api_key.get("BearerToken"),
        verify=bool(cfg.verify_ssl),
    )


class KubeApi:
    """Thread-safe (urllib3 pools are) JSON client with a timeout on every call."""

    def __init__(self, credentials: Credentials, *, pool_size: int = 16, timeout: float = 30.0) -> None:
        self.server = credentials.server
        self._timeout = timeout
        headers = {"Accept": "application/json", "User-Agent": "kubetune-dev"}
        if credentials.authorization:
            headers["Authorization"] = credentials.authorization
        self._headers = headers
        # block=False: extra connections are made and dropped under load rather than waiting.
        self._pool = urllib3.PoolManager(
            num_pools=2,
            maxsize=pool_size,
            block=False,
            cert_reqs=ssl.CERT_REQUIRED if credentials.verify else ssl.CERT_NONE,
            ca_certs=credentials.ca_file,
            cert_file=credentials.cert_file,
            key_file=credentials.key_file,
            retries=False,
        )

    @classmethod
    def from_kubeconfig(cls, kubeconfig: Path | None, *, temp_dir: Path | None = None, **kwargs: Any) -> KubeApi:
        return cls(load_credentials(kubeconfig, temp_dir), **kwargs)

    def url(self, path: str, query: Mapping[str, Any] | None = None) -> str:
        url = self.server + path
        if query:
            clean = {k: _query_value(v) for k, v in query.items() if v is not None}
            url += "?" + urllib.parse.urlencode(clean)
        return url

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> JSON:
        headers = dict(self._headers)
        data: bytes | None = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        try:
            resp = self._pool.request(
                method,
                self.url(path, query),
                body=data,
                headers=headers,
                timeout=urllib3.Timeout(connect=5.0, read=timeout or self._timeout),
                preload_content=True,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise ApiError(0, "ConnectionError", str(exc)) from exc
        return _decode(resp.status, resp.data)

    def get(self, path: str, **query: Any) -> JSON:
        return self.request("GET", path, query=query)

    def create(self, path: str, body: JSON) -> JSON:
        return self.request("POST", path, body=body)

    def replace(self, path: str, body: JSON) -> JSON:
        return self.request("PUT", path, body=body)

    def patch(self, path: str, body: Any, patch_type: PatchType = "strategic") -> JSON:
        return self.request("PATCH", path, body=body, content_type=_PATCH_CONTENT_TYPES[patch_type])

    def delete(self, path: str, body: JSON | None = None, **query: Any) -> JSON:
        return self.request("DELETE", path, body=body, query=query)

    def apply(self, manifest: JSON, *, field_manager: str) -> JSON:
        """Server-side apply (create or update) of one object, taking over conflicting fields."""
        return self.request(
            "PATCH",
            object_path(manifest),
            query={"fieldManager": field_manager, "force": "true"},
            body=manifest,
            content_type="application/apply-patch+yaml",  # JSON is YAML
        )

    def watch(self, path: str, *, timeout_seconds: int = 60, **query: Any) -> Iterator[JSON]:
        """Yield watch events ({"type", "object"}) until the server ends the watch.

        An ERROR event (e.g. 410 Gone when the resourceVersion expired) is raised as ApiError so
        callers relist.
        """
        params = dict(query, watch="true", timeoutSeconds=timeout_seconds, allowWatchBookmarks="true")
        try:
            resp = self._pool.request(
                "GET",
                self.url(path, params),
                headers=self._headers,
                # The server closes after timeoutSeconds; the read timeout only catches a dead server.
                timeout=urllib3.Timeout(connect=5.0, read=timeout_seconds + 30.0),
                preload_content=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise ApiError(0, "ConnectionError", str(exc)) from exc
        try:
            if resp.status >= 300:
                _decode(resp.status, resp.read())
            buffer = b""
            for chunk in resp.stream(64 * 1024, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield _watch_event(line)
            if buffer.strip():
                yield _watch_event(buffer)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ApiError(0, "ConnectionError", str(exc)) from exc
        finally:
            resp.release_conn()


def object_path(manifest: JSON) -> str:
    """REST path of an object; the plural is the lowercased kind + "s", true of every kind the dev
    cluster applies (ServiceAccount, ConfigMap, Service, Deployment, ClusterRole(Binding))."""
    api_version, kind, meta = manifest["apiVersion"], manifest["kind"], manifest["metadata"]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    namespace = f"/namespaces/{meta['namespace']}" if meta.get("namespace") else ""
    return f"{base}{namespace}/{kind.lower()}s/{meta['name']}"


def _watch_event(line: bytes) -> JSON:
    event: JSON = json.loads(line)
    if event.get("type") == "ERROR":
        status = event.get("object") or {}
        raise ApiError(int(status.get("code") or 500), str(status.get("reason", "")), str(status.get("message", "")))
    return event


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _decode(status: int, data: bytes) -> JSON:
    try:
        payload: Any = json.loads(data) if data else {}
    except json.JSONDecodeError:
        payload = {"message": data.decode(errors="replace")[:500]}
    if not isinstance(payload, dict):
        payload = {"items": payload}
    if status >= 300:
        raise ApiError(status, str(payload.get("reason", "")), str(payload.get("message", "")), payload)
    result: JSON = payload
    return result
