"""A driver and the cluster's autoscaler: is there a node that can run a trial, can the cluster
grow one (its node types, read from the cluster itself), and if so ask for the trials' nodes,
wait for the first with a progress line, and withdraw the request. Ray's lines are marked `# [Ray]`."""

from __future__ import annotations

import atexit
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sentisweep import exit_codes

DEFAULT_WAIT_MINUTES = 30.0  # a cloud GPU node takes 2-10 min to boot and pull a multi-GB image
PROGRESS_EVERY_S = 30
# Where a pod's service account token is mounted; KubeRay sets RAY_CLUSTER_NAME in every Ray container.
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class NodeType:
    name: str
    resources: dict[str, float]
    max_workers: int  # -1: no limit


def covers(resources: dict[str, float], bundle: dict[str, float]) -> bool:
    return all(resources.get(k, 0) >= v for k, v in bundle.items())


def node_types() -> list[NodeType] | None:
    """What the cluster can grow to, as its autoscaler knows it, or None where the cluster cannot
    say. Ray's GCS holds the config where an autoscaler reports it there (Ray 2.60's open-source
    autoscalers do not); on KubeRay the RayCluster says it, read as the autoscaler beside the head
    reads it (the head's service account) and turned into node types by Ray's own converter."""
    import ray._private.state  # [Ray]

    config = ray._private.state.state.get_cluster_config()  # [Ray]
    if config is not None and config.node_group_configs:
        return [NodeType(g.name, dict(g.resources), g.max_count) for g in config.node_group_configs]
    name = os.environ.get("RAY_CLUSTER_NAME")
    if not name or not (SERVICE_ACCOUNT / "token").exists():
        return None
    from ray.autoscaler._private.kuberay.autoscaling_config import AutoscalingConfigProducer  # [Ray]

    try:
        config = AutoscalingConfigProducer(name, (SERVICE_ACCOUNT / "namespace").read_text().strip())()  # [Ray]
    except Exception as err:  # no RBAC to read the RayCluster, API server unreachable
        print(f"could not read RayCluster {name} for its node types ({err}); waiting as if they fit", flush=True)
        return None
    return [NodeType(t, dict(spec["resources"]), spec["max_workers"])
            for t, spec in config["available_node_types"].items()]


def autoscaler_report() -> dict | None:
    """The last status of an autoscaler that can add nodes (Ray's autoscaler v1 writes it to the
    GCS every few seconds), or None where none runs. Every head runs Ray's monitor, but without an
    autoscaling config (a `ray start --head` cluster) it only mirrors the nodes there are, each its
    own node type `node_<node id>`: that is no autoscaler. v2 keeps its state elsewhere: {} then."""
    from ray._private.ray_constants import DEBUG_AUTOSCALING_STATUS  # [Ray]
    from ray.autoscaler._private.util import format_readonly_node_type  # [Ray]
    from ray.autoscaler.v2.utils import is_autoscaler_v2  # [Ray]
    from ray.experimental.internal_kv import _internal_kv_get  # [Ray]

    status = _internal_kv_get(DEBUG_AUTOSCALING_STATUS)  # [Ray]
    if status:
        report = json.loads(status).get("autoscaler_report") or {}
        mirrored = (report.get("node_type_mapping") or {}).items()
        return report if any(kind != format_readonly_node_type(node) for node, kind in mirrored) else None
    return {} if is_autoscaler_v2(fetch_from_server=True) else None  # [Ray]


def nodes_now() -> list[dict[str, float]]:
    import ray  # [Ray]

    return [n["Resources"] for n in ray.nodes() if n["Alive"]]  # [Ray]


def show(resources: dict[str, float]) -> str:
    """{CPU: 8, GPU: 1}: what a trial asks for, without the bytes of memory Ray also counts."""
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in resources.items() if "memory" not in k) + "}"


def describe(report: dict) -> str:
    """One line of an autoscaler report: what it launches and what failed."""
    launching = {**report.get("pending_launches", {})}
    for _, node_type, *_ in report.get("pending_nodes", []):
        launching[node_type] = launching.get(node_type, 0) + 1
    parts = [f"starting {', '.join(f'{n} x {t}' for t, n in launching.items())}" if launching else "starting nothing"]
    if report.get("failed_nodes"):
        parts.append(f"{len(report['failed_nodes'])} failed launch(es)")
    return "; ".join(parts)


def make_room(cpus_per_trial: float, gpus_per_trial: float, trials: int, wait_minutes: float | None) -> None:
    """Return once a node can run one trial (`ask_for_room`, then its wait)."""
    ask_for_room(cpus_per_trial, gpus_per_trial, trials, wait_minutes)()


def ask_for_room(cpus_per_trial: float, gpus_per_trial: float, trials: int,
                 wait_minutes: float | None) -> Callable[[], None]:
    """Where no node can run one trial now: refuse (exit 2) if the cluster can never have one (its
    node types say so, or it has no autoscaler and `wait_minutes` is None); else ask the autoscaler
    for `trials` trials' nodes. Returns the wait for the first node, at most `wait_minutes` (default
    DEFAULT_WAIT_MINUTES; nothing to wait for where a node fits now), which withdraws the request
    once one joined; the request is withdrawn at exit too. Between the two a driver does its own
    preparation (tokenizing, fetching weights) while the node boots: a refusal comes before it.

    Ray keeps a request until another replaces it: kept, it holds the nodes up after the work
    and the cluster's idleTimeoutSeconds never fires (4 GPU workers, billed). Once a node is up,
    Tune's pending trials are demand the autoscaler sees and scales for on its own; atexit covers
    an error or Ctrl-C during the wait (handlers run last-registered first: this one before Ray's
    own shutdown, still connected). Only a driver killed outright leaves the request standing."""
    from ray.autoscaler.sdk import request_resources  # [Ray]

    bundle = {"CPU": cpus_per_trial, **({"GPU": gpus_per_trial} if gpus_per_trial else {})}
    if any(covers(node, bundle) for node in nodes_now()):
        return lambda: None
    what = f"resources.cpus_per_trial = {cpus_per_trial:g}, gpus_per_trial = {gpus_per_trial:g}"
    types, report = node_types(), autoscaler_report()
    growable = types and [t for t in types if t.max_workers != 0 and covers(t.resources, bundle)]
    if types is not None and not growable:
        listed = "; ".join(f"{t.name}: {show(t.resources)}, at most {t.max_workers}" for t in types)
        raise exit_codes.BadInput(f"{what}: no node of this cluster has that, and none its autoscaler can add "
                                  f"does ({listed}), so no trial could ever start")
    if report is None and wait_minutes is None:
        have = "; ".join(str({k: v for k, v in n.items() if k in ("CPU", "GPU")}) for n in nodes_now())
        raise exit_codes.BadInput(
            f"{what}: no node of this cluster has that (nodes: {have}) and no autoscaler runs to add one, so no "
            f"trial could ever start; if nodes will join (by hand, or a scaler Ray does not see), wait for them "
            f"with --wait-for-nodes MINUTES")
    minutes = DEFAULT_WAIT_MINUTES if wait_minutes is None else wait_minutes
    request_resources(bundles=[bundle] * trials)  # [Ray] kept until replaced: the autoscaler holds the nodes
    atexit.unregister(withdraw_request)  # once, however many stages of this driver asked
    atexit.register(withdraw_request)
    kinds = f" (node types that fit: {', '.join(t.name for t in growable)})" if growable else ""
    print(f"no node can run a trial now: asked the autoscaler for {trials} x {show(bundle)}{kinds}; will wait up to "
          f"{minutes:g} min for the first (--wait-for-nodes)", flush=True)

    def wait() -> None:
        _wait_for_node(bundle, minutes)
        withdraw_request()
    return wait


def _wait_for_node(bundle: dict[str, float], minutes: float) -> None:
    started = last = time.monotonic()
    while not any(covers(node, bundle) for node in nodes_now()):
        waited = time.monotonic() - started
        report = autoscaler_report()
        if waited > minutes * 60:
            raise exit_codes.BadInput(
                f"--wait-for-nodes = {minutes:g}: no node that can run a trial ({show(bundle)}) joined in "
                f"{minutes:g} min (the autoscaler: {describe(report or {})}); give it longer, or check the node group "
                f"(`kubectl get pods`, `ray status`)")
        if time.monotonic() - last >= PROGRESS_EVERY_S:
            last = time.monotonic()
            print(f"waiting for a node that can run a trial: {waited / 60:.1f} of {minutes:g} min; the autoscaler: "
                  f"{describe(report or {})}", flush=True)
        time.sleep(2)
    print(f"a node that can run a trial joined after {(time.monotonic() - started) / 60:.1f} min", flush=True)


def withdraw_request() -> None:
    """Replace this driver's autoscaler request with none: the autoscaler may scale idle nodes down."""
    import ray  # [Ray]
    from ray.autoscaler.sdk import request_resources  # [Ray]

    if ray.is_initialized():
        request_resources(bundles=[])  # [Ray]
