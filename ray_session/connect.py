"""Join a Ray cluster or start one here, and check that a trial's resources can ever be had."""

from __future__ import annotations

import os

# Set on a test cluster whose nodes declare GPUs they do not have (`ray start --num-gpus 1` on a
# CPU machine): Ray schedules GPU trials and actors there, and they run on the CPU.
DECLARED_GPUS_ONLY = "SENTISWEEP_DECLARED_GPUS_ONLY"


def connect(local: bool, num_gpus: float | None) -> None:
    """Join RAY_ADDRESS's cluster (as under `ray job submit`), or start Ray here."""
    import ray  # [Ray]
    import ray.data  # [Ray]

    if ray.is_initialized():  # a driver that runs several stages connects once
        return
    # Ray Data's progress bars redraw from every actor into the job log; our jobs print
    # their own progress lines instead.
    ray.data.DataContext.get_current().enable_progress_bars = False  # [Ray]
    if local or not os.environ.get("RAY_ADDRESS"):
        os.environ.pop("RAY_ADDRESS", None)
        if num_gpus is None:
            import torch

            num_gpus = torch.cuda.device_count()
        # [Ray] a new instance, never one that `ray start` left running on this machine
        ray.init(address="local", num_gpus=num_gpus, include_dashboard=False,  # [Ray]
                 runtime_env={"worker_process_setup_hook": "ray_session.connect.quiet_placement_group_cleaner"})
    else:
        ray.init(address=os.environ["RAY_ADDRESS"])  # [Ray] the job's working_dir is on workers' path


def quiet_placement_group_cleaner() -> None:
    """Every worker of a local Ray (`worker_process_setup_hook`): Ray Train's placement-group
    cleaner asks the State API, served by the dashboard a local Ray runs without, whether the
    Train controller is alive, and warns each time. A local Ray ends with its driver, so there
    is nothing for it to clean; on a cluster the dashboard runs and the cleaner works."""
    import logging

    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(
        logging.ERROR)


def unsatisfiable(cpus_per_trial: float, gpus_per_trial: float, expect_gpus: float = 0) -> str | None:
    """Why no trial could ever start on this cluster, or None. What the cluster has now, or
    what it will grow to: `expect_gpus` declares GPU nodes an autoscaler will add (a GPU group
    scaled to zero while idle has no GPU until asked; Ray cannot say what it could add)."""
    import ray  # [Ray]

    cluster = ray.cluster_resources()  # [Ray]
    have_cpu, have_gpu = cluster.get("CPU", 0), max(cluster.get("GPU", 0), expect_gpus)
    if gpus_per_trial > have_gpu or (cpus_per_trial > have_cpu and not expect_gpus):
        hint = "" if expect_gpus else "; if an autoscaler adds GPU nodes, say so with --expect-gpus N"
        return (f"resources.cpus_per_trial = {cpus_per_trial:g}, gpus_per_trial = {gpus_per_trial:g}: the cluster "
                f"has {have_cpu:g} CPUs and {have_gpu:g} GPUs in all, so no trial could ever start{hint}")
    return None


def ask_autoscaler(cpus_per_trial: float, gpus_per_trial: float, trials: int) -> str | None:
    """When not even one trial fits the cluster now (a GPU group scaled to zero, spot nodes
    lost), ask an autoscaler for what `trials` concurrent trials need, so that it adds nodes
    before Tune queues anything, and say so. Returns what was asked, or None. (Trials that
    merely queue need nothing: an autoscaler also scales up for pending trials.)

    Ray keeps a request until another replaces it: kept, it holds the nodes up after the work
    and the cluster's idleTimeoutSeconds never fires (4 GPU workers, billed). So the request is
    withdrawn when this process exits, whether it ends well, with an error or on Ctrl-C (atexit
    handlers run last-registered first: this one before Ray's own shutdown, still connected).
    Only a driver killed outright (SIGKILL) leaves it standing."""
    import atexit

    import ray  # [Ray]
    from ray.autoscaler.sdk import request_resources  # [Ray]

    cluster = ray.cluster_resources()  # [Ray]
    bundle = {"CPU": cpus_per_trial, **({"GPU": gpus_per_trial} if gpus_per_trial else {})}
    if all(cluster.get(k, 0) >= v for k, v in bundle.items()):
        return None
    request_resources(bundles=[bundle] * trials)  # [Ray] kept until replaced: the autoscaler holds the nodes
    atexit.unregister(withdraw_request)  # once, however many stages of this driver asked
    atexit.register(withdraw_request)
    asked = f"{trials} x {bundle}"
    print(f"the cluster lacks what the work needs now: asked the autoscaler for {asked}; it waits for those nodes",
          flush=True)
    return asked


def withdraw_request() -> None:
    """Replace this driver's autoscaler request with none: the autoscaler may scale idle nodes down."""
    import ray  # [Ray]
    from ray.autoscaler.sdk import request_resources  # [Ray]

    if ray.is_initialized():
        request_resources(bundles=[])  # [Ray]
