"""
Helpers for data-parallel training launched through MPI.

`mpiexec -n N python script.py` starts N ranks; `setup_dist()` joins them in a
torch.distributed process group (NCCL on GPUs, gloo on CPU) whose rendezvous
address and port are chosen by rank 0 and broadcast over MPI. A plain
`python script.py` is a single process and none of the collectives below do
anything. Whether mpiexec started the process is decided in
guided_diffusion.mpi_launch, as everywhere in the project.
"""

import io
import os
import socket

import numpy as np
import torch
import torch.distributed as dist

from .mpi_launch import local_rank_and_size, mpi_world

# MPI's broadcast counts are C ints: keep each chunk well under 2**31 bytes.
_CHUNK_BYTES = 2**30

_comm = None  # MPI.COMM_WORLD when running with more than one rank


def setup_dist():
    """
    Join the process group of all MPI ranks (no-op for a single process).

    Safe to call more than once. Each rank on a node is pinned to its own GPU
    when GPUs are present.
    """
    global _comm
    if dist.is_initialized():
        return
    comm, _, size = mpi_world()
    if comm is None or size == 1:
        return
    _comm = comm

    local_rank, local_size = local_rank_and_size(comm)
    use_cuda = torch.cuda.is_available()
    if use_cuda:
        if local_size > torch.cuda.device_count():
            raise RuntimeError(
                f"{local_size} MPI ranks on this node but {torch.cuda.device_count()} visible GPU(s): NCCL "
                f"needs one GPU per rank; launch with -n {torch.cuda.device_count()}, or hide the GPUs "
                f"(CUDA_VISIBLE_DEVICES=) to run the ranks on CPU with gloo"
            )
        torch.cuda.set_device(local_rank)
    backend = "nccl" if use_cuda else "gloo"

    hostnames = comm.allgather(socket.gethostname())
    if len(set(hostnames)) == 1:
        address = "127.0.0.1"
    else:
        address = socket.gethostbyname(socket.getfqdn()) if comm.Get_rank() == 0 else None
    address = comm.bcast(address, root=0)
    port = comm.bcast(_find_free_port() if comm.Get_rank() == 0 else None, root=0)

    os.environ["MASTER_ADDR"] = address
    os.environ["MASTER_PORT"] = str(port)
    os.environ["RANK"] = str(comm.Get_rank())
    os.environ["WORLD_SIZE"] = str(comm.Get_size())
    dist.init_process_group(backend=backend, init_method="env://")


def _find_free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        return s.getsockname()[1]


def is_distributed():
    """True when more than one rank takes part in training."""
    return dist.is_initialized() and dist.get_world_size() > 1


def get_rank():
    return dist.get_rank() if dist.is_initialized() else 0


def get_world_size():
    return dist.get_world_size() if dist.is_initialized() else 1


def dev():
    """The device this rank computes on."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier():
    if is_distributed():
        dist.barrier()


def broadcast_object(obj, root=0):
    """Return rank `root`'s `obj` on every rank (identity for one process)."""
    if _comm is not None:
        return _comm.bcast(obj, root=root)
    if is_distributed():
        box = [obj]
        dist.broadcast_object_list(box, src=root)
        return box[0]
    return obj


def rank0_result(fn):
    """
    Evaluate fn() on rank 0 only and return its result on every rank; a
    ValueError / FileNotFoundError it raises is raised on every rank, so no
    rank is left waiting for a broadcast that never comes.
    """
    outcome = None
    if get_rank() == 0:
        try:
            outcome = (fn(), None, None)
        except (ValueError, FileNotFoundError) as exc:
            outcome = (None, type(exc).__name__, str(exc))
    result, error_type, message = broadcast_object(outcome)
    if error_type is not None:
        raise (FileNotFoundError if error_type == "FileNotFoundError" else ValueError)(message)
    return result


def all_gather_object(obj):
    """List of every rank's `obj`, in rank order ([obj] for one process)."""
    if _comm is not None:
        return _comm.allgather(obj)
    if is_distributed():
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, obj)
        return gathered
    return [obj]


def load_state_dict(path, **kwargs):
    """
    Load a torch checkpoint that rank 0 reads from disk and broadcasts.

    Only rank 0's `path` matters. Every rank takes the same collective path:
    rank 0 first broadcasts either the byte count or the error it met, so a
    missing file raises the same FileNotFoundError on all ranks instead of
    leaving the others waiting forever (guided-diffusion#23), and the chunk
    count is derived from that size on every rank.

    :param path: checkpoint file.
    :param kwargs: passed to torch.load (e.g. map_location).
    """
    if _comm is None:
        return _torch_load(_read_bytes(path), path, **kwargs)

    data, header = None, None
    if _comm.Get_rank() == 0:
        try:
            data = _read_bytes(path)
            header = (len(data), None, False)
        except OSError as exc:
            header = (None, str(exc), isinstance(exc, FileNotFoundError))
    size, message, missing = _comm.bcast(header, root=0)
    if size is None:
        raise (FileNotFoundError if missing else OSError)(message)

    buf = np.frombuffer(data, dtype=np.uint8).copy() if data is not None else np.empty(size, dtype=np.uint8)
    for start in range(0, size, _CHUNK_BYTES):
        _comm.Bcast(buf[start : start + _CHUNK_BYTES], root=0)
    return _torch_load(buf.tobytes(), path, **kwargs)


def _read_bytes(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    with open(path, "rb") as f:
        return f.read()


def _not_a_checkpoint(data):
    """Why `data` cannot be a torch.save file (its zip format or a legacy pickle), or None."""
    if data[:2] == b"PK" or data[:1] == b"\x80":
        return None
    if not data:
        return "it is empty"
    head = data[:64]
    if head.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer: fetch the file with `git lfs pull`"
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "it is a text file"
    return "neither torch.save's zip format nor a pickle"


def _torch_load(data, path, **kwargs):
    why = _not_a_checkpoint(data)
    if why:
        raise ValueError(f"{path} is not a PyTorch checkpoint ({why})")
    try:
        return torch.load(io.BytesIO(data), **kwargs)
    except Exception as exc:  # pickle/zip errors of every kind for a corrupt file
        raise ValueError(f"cannot read checkpoint {path}: {exc}") from exc


def sync_params(params):
    """Copy rank 0's values of `params` (tensors) to every rank."""
    if not is_distributed():
        return
    for p in params:
        with torch.no_grad():
            dist.broadcast(p, 0)
