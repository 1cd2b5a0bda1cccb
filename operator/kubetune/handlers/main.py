"""Run the operator: `kubetune operator` (or `python -m kubetune.handlers.main`)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import threading
from typing import Any

import kopf
from prometheus_client import start_http_server

from kubetune.handlers.config import OperatorConfig
from kubetune.handlers.registry import build_registry, check_workload_kinds
from kubetune.k8s.client import Credentials, KubeClient
from kubetune.metrics.operator import OperatorMetrics
from kubetune.threads import limit_numeric_threads


async def run_operator(
    config: OperatorConfig,
    metrics: OperatorMetrics | None = None,
    stop_flag: asyncio.Event | threading.Event | None = None,
    ready_flag: asyncio.Event | threading.Event | None = None,
) -> None:
    """The operator until `stop_flag` is set (or forever); tests run it in a thread."""
    metrics = metrics or OperatorMetrics()
    if config.workload_kinds:
        client = KubeClient(Credentials.load(config.kubeconfig))
        try:
            refused = await check_workload_kinds(client, config)
        finally:
            await client.close()
        config = dataclasses.replace(
            config, workload_kinds=tuple(k for k in config.workload_kinds if k not in refused),
            refused_workload_kinds=refused)
    liveness = f"http://{config.listen_address}:{config.health_port}/healthz" if config.health_port else None
    await kopf.operator(
        registry=build_registry(config, metrics),
        clusterwide=not config.namespaces,
        namespaces=list(config.namespaces),
        standalone=True,  # one replica (Recreate); no peering objects needed
        liveness_endpoint=liveness,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "operator", help="run the kubetune operator (settings from KUBETUNE_* environment variables)"
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # Kopf logs every handled event at INFO: thousands of lines a minute at scale
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    limit_numeric_threads()  # before the search engine first uses numpy's BLAS pool
    config = OperatorConfig.from_env()
    metrics = OperatorMetrics()
    if config.metrics_port:
        start_http_server(config.metrics_port, addr=config.listen_address, registry=metrics.registry)
    asyncio.run(run_operator(config, metrics))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    raise SystemExit(run(parser.parse_args(["operator", *__import__("sys").argv[1:]])))
