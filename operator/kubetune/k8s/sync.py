"""The synchronous facade of kubetune's Kubernetes client, for the CLI, the dev cluster and its node agent.

Same credentials, errors and paths as the operator's asyncio client (`k8s.core`); urllib3 pools
underneath, with an explicit timeout on every call so a hung API server cannot hang a caller, and
watches that raise `Gone` when their resourceVersion expired so callers relist.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import urllib3

from kubetune.k8s.core import (
    AlreadyExists,
    ApiError,
    Conflict,
    Credentials,
    Gone,
    Json,
    NotFound,
    Unauthorized,
    api_error,
    decode,
    object_path,
)

__all__ = [
    "AlreadyExists", "ApiError", "Conflict", "Credentials", "Gone", "JSON", "KubeApi", "NotFound", "object_path",
]

log = logging.getLogger(__name__)

JSON = Json
PatchType = Literal["strategic", "merge", "json"]

_PATCH_CONTENT_TYPES: dict[str, str] = {
    "strategic": "application/strategic-merge-patch+json",
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
}


class KubeApi:
    """Thread-safe (urllib3 pools are) JSON client with a timeout on every call."""

    def __init__(self, credentials: Credentials, *, pool_size: int = 16, timeout: float = 30.0) -> None:
        self.credentials = credentials
        self.server = credentials.server
        self._timeout = timeout
        # block=False: extra connections are made and dropped under load rather than waiting.
        self._pool = urllib3.PoolManager(
            num_pools=2, maxsize=pool_size, block=False, ssl_context=credentials.ssl_context(), retries=False,
        )

    @classmethod
    def from_kubeconfig(cls, kubeconfig: Path | None, *, temp_dir: Path | None = None, **kwargs: Any) -> KubeApi:
        return cls(Credentials.load(kubeconfig, temp_dir=temp_dir), **kwargs)

    def _headers(self) -> dict[str, str]:
        return {"Accept": "application/json", "User-Agent": "kubetune", **self.credentials.headers()}

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
        try:
            return self._send(method, path, query, body, content_type, timeout)
        except Unauthorized:
            # A rotated or expired token: read the credentials again (exec plugins re-run), try once more.
            self.credentials = self.credentials.reload()
            return self._send(method, path, query, body, content_type, timeout)

    def _send(
        self, method: str, path: str, query: Mapping[str, Any] | None, body: Any, content_type: str,
        timeout: float | None,
    ) -> JSON:
        headers = self._headers()
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
        return decode(resp.status, resp.data)

    def get_text(self, path: str) -> str:
        """A plain-text resource (/metrics, a pod's log)."""
        try:
            resp = self._pool.request("GET", self.url(path), headers=self._headers(),
                                      timeout=urllib3.Timeout(connect=5.0, read=self._timeout))
        except urllib3.exceptions.HTTPError as exc:
            raise ApiError(0, "ConnectionError", str(exc)) from exc
        if resp.status >= 300:
            decode(resp.status, resp.data)
        return str(resp.data.decode(errors="replace"))

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
                headers=self._headers(),
                # The server closes after timeoutSeconds; the read timeout only catches a dead server.
                timeout=urllib3.Timeout(connect=5.0, read=timeout_seconds + 30.0),
                preload_content=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise ApiError(0, "ConnectionError", str(exc)) from exc
        try:
            if resp.status >= 300:
                decode(resp.status, resp.read())
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


def _watch_event(line: bytes) -> JSON:
    event: JSON = json.loads(line)
    if event.get("type") == "ERROR":
        status = event.get("object") or {}
        raise api_error(int(status.get("code") or 500), status)
    return event


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
