"""
Multi-process launch that works with and without CUDA.

With CUDA this is Detectron2's :func:`detectron2.engine.launch` (NCCL). Without CUDA it starts
``num_gpus_per_machine`` CPU processes with the gloo backend: through Detectron2's own launch where
that supports CPU (Detectron2 main; probed by :func:`gridclip.compat.detectron2_launch_supports_cpu`),
otherwise (Detectron2 v0.6 asserts CUDA) with workers here that set up the process group and
Detectron2's local process group the same way. Either way each CPU process gets its share of the
machine's threads and all ranks leave together, so the distributed path (DDP, distributed samplers,
evaluator gathers, rank-0-only checkpoints) runs in CI.
"""
import functools
import logging
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import launch as detectron2_launch
from detectron2.engine.launch import _find_free_port
from detectron2.utils import comm

from ..compat import detectron2_launch_supports_cpu

__all__ = ["launch", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = timedelta(minutes=30)


def launch(
    main_func,
    num_gpus_per_machine,
    num_machines=1,
    machine_rank=0,
    dist_url=None,
    args=(),
    timeout=DEFAULT_TIMEOUT,
):
    """
    Args: as :func:`detectron2.engine.launch`. ``num_gpus_per_machine`` is the number of processes
    per machine; on a machine without CUDA each process runs on the CPU with gloo.
    """
    if torch.cuda.is_available():
        return detectron2_launch(
            main_func, num_gpus_per_machine, num_machines, machine_rank, dist_url, args, timeout
        )
    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1:
        return main_func(*args)
    if dist_url is None or dist_url == "auto":
        if num_machines != 1:
            raise ValueError("dist_url=auto is not supported for multi-machine jobs; pass tcp://HOST:PORT")
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    if detectron2_launch_supports_cpu()[0]:
        # Detectron2 starts gloo itself; the wrapper only splits the threads and leaves together.
        main = functools.partial(_run_cpu_rank, main_func, num_gpus_per_machine)
        return detectron2_launch(main, num_gpus_per_machine, num_machines, machine_rank, dist_url, args, timeout)
    mp.start_processes(
        _cpu_worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout),
        daemon=False,
        start_method="spawn",
    )


def _run_cpu_rank(main_func, num_per_machine, *args):
    """``main_func(*args)`` in one of ``num_per_machine`` CPU processes of an initialised gloo group."""
    # N processes share the machine's cores: without this each would start torch's full thread pool.
    torch.set_num_threads(max(1, torch.get_num_threads() // num_per_machine))
    main_func(*args)
    # Every rank leaves together: a rank tearing gloo down while another still talks to it aborts.
    comm.synchronize()
    dist.destroy_process_group()


def _cpu_worker(local_rank, main_func, world_size, num_per_machine, machine_rank, dist_url, args, timeout):
    """The gloo worker for a Detectron2 whose launch requires CUDA."""
    global_rank = machine_rank * num_per_machine + local_rank
    try:
        dist.init_process_group(
            backend="gloo", init_method=dist_url, world_size=world_size, rank=global_rank, timeout=timeout
        )
    except Exception:
        logging.getLogger(__name__).error("Process group URL: %s", dist_url)
        raise
    # Detectron2's comm.get_local_rank()/get_local_size() read this group (set by its own launch).
    num_machines = world_size // num_per_machine
    for i in range(num_machines):
        ranks_on_i = list(range(i * num_per_machine, (i + 1) * num_per_machine))
        group = dist.new_group(ranks_on_i)
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
    comm.synchronize()
    _run_cpu_rank(main_func, num_per_machine, *args)
