"""A small asynchronous Kubernetes REST client: JSON in, JSON out.

The operator only creates, patches, deletes and reads a handful of kinds, so
a thin layer over aiohttp beats a generated client: no model classes to
convert, one connection pool, and API errors mapped to a few exceptions the
reconciler can reason about (AlreadyExists, NotFound, Conflict).
"""

from __future__ import annotations

import json
import os
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

Json = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


class ApiError(Exception):
    """A non-2xx answer from the API server."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class NotFound(ApiError):
    pass


class AlreadyExists(ApiError):
    pass


class Conflict(ApiError):
    pass


def _error(status: int, body: Any) -> ApiError:
    reason = body.get("reason", "") if isinstance(body, dict) else ""
    message = body.get("message", str(body)) if isinstance(body, dict) else str(body)
    if status == 404:
        return NotFound(status, reason, message)
    if status == 409 and reason == "AlreadyExists":
        return AlreadyExists(status, reason, message)
    if status == 409:
        return Conflict(status, reason, message)
    return ApiError(status, reason, message)


def resource_path(
    group: str, version: str, plural: str, namespace: str | None = None, name: str | None = None,
    subresource: str | None = None,
) -> str:
    """/api/v1/... for the core group, /apis/<group>/<version>/... otherwise."""
    path = f"/api/{version}" if not group else f"/apis/{group}/{version}"
    if namespace is not None:
        path += f"/namespaces/{quote(namespace, safe='')}"
    path += f"/{plural}"
    if name is not None:
        path += f"/{quote(name, safe='')}"
    if subresource is not None:
        path += f"/{subresource}"
    return path


@dataclass(frozen=True)
class Credentials:
    host: str
    ca_file: str | None
    cert_file: str | None
    key_file: str | None
    verify: bool
    token: str | None
    token_file: str | None  # re-read: projected service-account tokens rotate

    @classmethod
    def load(cls, kubeconfig: str | None = None, context: str | None = None) -> Credentials:
        """In-cluster credentials when running in a pod, else the kubeconfig ($KUBECONFIG or ~/.kube/config)."""
        from kubernetes import client, config  # lazily: only the config loaders are used

        configuration = client.Configuration()
        token_file: str | None = None
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST") and os.path.exists(
            "/var/run/secrets/kubernetes.io/serviceaccount/token"
        ):
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            token_file = "/var/run/secrets/kubernetes.io/serviceaccount/token"
        else:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context, client_configuration=configuration
            )
        authorization = configuration.api_key.get("authorization") or configuration.api_key.get("BearerToken")
        token = None
        if authorization:
            token = authorization.removeprefix("Bearer ").strip()
        return cls(
            host=configuration.host.rstrip("/"),
            ca_file=configuration.ssl_ca_cert,
            cert_file=configuration.cert_file,
            key_file=configuration.key_file,
            verify=bool(configuration.verify_ssl),
            token=token,
            token_file=token_file,
        )

    def read_token(self) -> str | None:
        if self.token_file:
            with open(self.token_file) as handle:
                return handle.read().strip()
        return self.token

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.host.startswith("https"):
            return False
        context = ssl.create_default_context(cafile=self.ca_file)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.cert_file and self.key_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context


class KubeClient:
    """One aiohttp session against one API server."""

    def __init__(self, credentials: Credentials, timeout: float = 30.0) -> None:
        self.credentials = credentials
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._token = credentials.token
        self._token_read_at = 0.0
        self.requests_total = 0  # for the API-calls-per-trial benchmark

    def _bearer(self) -> str | None:
        if self.credentials.token_file and time.monotonic() - self._token_read_at > 60:
            self._token = self.credentials.read_token()
            self._token_read_at = time.monotonic()
        return self._token

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self.credentials.ssl_context(), limit=64)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Json:
        headers = {"Accept": "application/json"}
        token = self._bearer()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        self.requests_total += 1
        session = self._get_session()
        async with session.request(method, self.credentials.host + path, data=data, params=params,
                                   headers=headers) as response:
            text = await response.text()
            try:
                payload: Any = json.loads(text) if text else {}
            except ValueError:
                payload = {"message": text}
            if response.status >= 400:
                raise _error(response.status, payload)
            return payload if isinstance(payload, dict) else {"items": payload}

    async def create(self, path: str, body: Json) -> Json:
        return await self.request("POST", path, body)

    async def merge_patch(self, path: str, body: Json) -> Json:
        return await self.request("PATCH", path, body, content_type=MERGE_PATCH)

    async def delete(
        self, path: str, propagation: str | None = "Background", uid: str | None = None,
        grace_period_seconds: int | None = None,
    ) -> Json:
        options: Json = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if propagation:
            options["propagationPolicy"] = propagation
        if uid:
            options["preconditions"] = {"uid": uid}
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        return await self.request("DELETE", path, options)

