"""Join a Ray cluster or start one here."""

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
