"""`kubetune dev up | down | env | status`: a local control plane for development and tests."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from kubetune_dev.cluster import DevCluster, DevClusterError
from kubetune_dev.components import DEFAULT_GPUS, DEFAULT_NODE_NAME
from kubetune_dev.layout import NODE_KINDS
from kubetune_dev.realnode import DEFAULT_REAL_NODE_NAME

PORT_FLAGS = ("apiserver", "prometheus", "etcd-client", "etcd-peer", "controller-manager", "scheduler", "agent")


def register(subparsers: Any) -> None:
    dev = subparsers.add_parser("dev", help="run a local dev cluster (real control plane, host-process node agent)")
    dev.add_argument("--home", type=Path, help="state directory (default $KUBETUNE_DEV_HOME or ~/.cache/kubetune/dev)")
    commands = dev.add_subparsers(dest="dev_command", required=True)

    up = commands.add_parser("up", help="start the cluster (or report the running one)")
    up.add_argument(
        "--node",
        choices=NODE_KINDS,
        default="agent",
        help="agent: the node agent runs pods as host processes (fast; images are ignored); real: kubelet, "
        "containerd, runc, CNI bridge, kube-proxy, CoreDNS and a fake-GPU device plugin run the pods' images",
    )
    up.add_argument("--gpus", type=int, default=DEFAULT_GPUS, help="nvidia.com/gpu capacity of the node")
    up.add_argument(
        "--node-name", help=f"default: {DEFAULT_NODE_NAME} (agent) or {DEFAULT_REAL_NODE_NAME} (real)"
    )
    up.add_argument("--bin-dir", type=Path, help="directory with etcd and kube-* (default ~/.cache/kubetune/current)")
    up.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for readiness")
    for flag in PORT_FLAGS:
        up.add_argument(f"--{flag}-port", type=int, help=f"fixed port for {flag} (default: a free one)")
    up.set_defaults(run=run_up)

    down = commands.add_parser("down", help="stop every process of the cluster and delete its state")
    down.set_defaults(run=run_down)

    env = commands.add_parser("env", help='print shell exports: eval "$(kubetune dev env)"')
    env.set_defaults(run=run_env)

    status = commands.add_parser("status", help="show which components run (exit 1 if any is down)")
    status.set_defaults(run=run_status)


def _cluster(args: argparse.Namespace, **kwargs: Any) -> DevCluster:
    return DevCluster(args.home, **kwargs)


def run_up(args: argparse.Namespace) -> int:
    pinned = {
        flag: getattr(args, f"{flag.replace('-', '_')}_port")
        for flag in PORT_FLAGS
        if getattr(args, f"{flag.replace('-', '_')}_port") is not None
    }
    cluster = _cluster(
        args,
        gpus=args.gpus,
        node_name=args.node_name,
        node_kind=args.node,
        bin_dir=args.bin_dir,
        pinned_ports=pinned,
    )
    try:
        info = cluster.up(timeout=args.timeout)
    except DevClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    state = "already running" if info.reused else "ready"
    print(f"# dev cluster {state}: API server {info.apiserver_url}, Prometheus {info.prometheus_url}")
    if info.node_kind == "real":
        print(f"# real node {info.node_name}: component logs in {info.home}/logs, state in {info.home}/node")
    else:
        print(f"# node agent logs and per-pod logs: {info.home}/logs, {info.home}/agent/pods")
    print("# point kubectl and helm at it with:")
    print(info.exports())
    return 0


def run_down(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    try:
        cluster.down()
    except (DevClusterError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"dev cluster in {cluster.layout.home} stopped and removed", file=sys.stderr)
    return 0


def run_env(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    if cluster.config is None:
        print(f"error: no dev cluster in {cluster.layout.home}; run `kubetune dev up`", file=sys.stderr)
        return 1
    if not cluster.is_running():
        print("warning: the dev cluster is not (fully) running; `kubetune dev up` restarts it", file=sys.stderr)
    print(cluster.info().exports())
    return 0


def run_status(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    cfg = cluster.config
    if cfg is None:
        print(f"no dev cluster in {cluster.layout.home}")
        return 1
    status = cluster.status()
    for name in cfg.components:
        print(f"{name:<24} {'running' if status[name] else 'NOT RUNNING'}   log: {cluster.layout.log_file(name)}")
    print(f"API server  {cfg.apiserver_url}\nPrometheus  {cfg.prometheus_url}\nkubeconfig  {cluster.kubeconfig}")
    return 0 if all(status.values()) else 1
