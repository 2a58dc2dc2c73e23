"""Join a Ray cluster or start one here."""

from __future__ import annotations

import atexit
import os
import sys

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
    atexit.register(shut_down_at_exit)  # runs before Ray's own (registered at its import): last in, first out


def shut_down_at_exit() -> None:
    """Ray shuts down at exit, seconds after a command's last lines: a Ctrl-C then printed Ray's
    traceback under a finished run's final screen. Shut down here first, and say what happened."""
    import ray  # [Ray]

    try:
        ray.shutdown()  # [Ray]
    except KeyboardInterrupt:
        print("\nCtrl-C while Ray shut down at exit: the lines above stand", file=sys.stderr)


def quiet_placement_group_cleaner() -> None:
    """Every worker of a local Ray (`worker_process_setup_hook`): Ray Train's placement-group
    cleaner asks the State API, served by the dashboard a local Ray runs without, whether the
    Train controller is alive, and warns each time. A local Ray ends with its driver, so there
    is nothing for it to clean; on a cluster the dashboard runs and the cleaner works."""
    import logging

    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(
        logging.ERROR)


def gpu_memory_of_a_gpu_node() -> int | None:
    """The memory of a GPU node's first GPU, read there: a cluster's driver runs on a head with no
    GPU, so its own torch cannot say. None where the GPUs are declared but absent (test clusters)."""
    import ray  # [Ray]

    @ray.remote(num_cpus=0, num_gpus=0.01)  # [Ray] a sliver of a GPU, beside whatever runs there
    def total_memory() -> int | None:
        import torch

        return torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else None

    return ray.get(total_memory.remote())  # [Ray]
