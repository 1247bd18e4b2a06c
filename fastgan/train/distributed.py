"""torchrun / DistributedDataParallel plumbing: one process per device, rank 0 writes the outputs."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "setup", "cleanup"]


@dataclass
class DistInfo:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    backend: str = ""
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    if v is None or v == "":
        return default
    try:
        return int(v)
    except ValueError:
        raise ValueError(f"environment variable {name}={v!r} is not an integer") from None


def setup(device_arg: str) -> tuple[DistInfo, torch.device]:
    """Read torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK), pick the device, init the process group.

    ``device_arg``: ``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda``. Under torchrun each process
    takes ``cuda:LOCAL_RANK``; the backend is NCCL on CUDA and Gloo on CPU.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    if world < 1:
        raise ValueError(f"environment variable WORLD_SIZE={world}: expected the number of processes (>= 1)")
    if not 0 <= rank < world:
        raise ValueError(f"environment variable RANK={rank}: expected 0 .. WORLD_SIZE - 1 = {world - 1} "
                         "(launch the processes with torchrun, which sets both)")
    if local_rank < 0:
        raise ValueError(f"environment variable LOCAL_RANK={local_rank}: expected an integer >= 0")
    if device_arg not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device: expected auto, cpu or cuda, got {device_arg!r}")
    use_cuda = device_arg == "cuda" or (device_arg == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda: CUDA is not available (torch.cuda.is_available() is False: "
                               f"torch {torch.__version__}, built with CUDA {torch.version.cuda}); use --device cpu")
        n = torch.cuda.device_count()
        if world > 1 and local_rank >= n:
            raise RuntimeError(f"LOCAL_RANK {local_rank} but only {n} CUDA device(s) visible; "
                               "use --nproc_per_node <= the number of GPUs")
        device = torch.device("cuda", local_rank if world > 1 else torch.cuda.current_device())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    info = DistInfo(world, rank, local_rank)
    if world > 1:
        info.backend = "nccl" if device.type == "cuda" else "gloo"
        if not dist.is_initialized():
            kwargs = {"device_id": device} if device.type == "cuda" else {}
            dist.init_process_group(info.backend, **kwargs)
            info.initialized_here = True
    return info, device


def cleanup(info: DistInfo, barrier: bool = False) -> None:
    """Tear down the process group this run created. ``barrier`` (after a run that completed): wait for every
    process first, so no process closes its connections while a peer is still saving or logging; a peer's
    connections closing under it is a suspect for the rare "terminate called without an active exception" abort
    of a torchrun worker at exit."""
    if info.initialized_here and dist.is_initialized():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()
