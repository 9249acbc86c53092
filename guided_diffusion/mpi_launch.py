"""
Whether this process was started by ``mpiexec``, and its rank: the one place
the project decides it (the training loop, the classifier's trainer, the
editor and the benchmark all ask here).

A launcher is recognised by the variables it sets in every process it starts:
MPICH's Hydra and Intel MPI (PMI_RANK, PMI_SIZE, MPI_LOCALNRANKS), Open MPI
(OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE), PMIx launchers such as Open MPI 5
or Slurm's ``srun --mpi=pmix`` (PMIX_RANK). Only then is mpi4py imported (which
initialises MPI); a plain ``python script.py`` never touches MPI.
"""

import os

MPI_ENVIRONMENT_VARIABLES = (
    "PMI_RANK",
    "PMI_SIZE",
    "MPI_LOCALNRANKS",
    "OMPI_COMM_WORLD_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "PMIX_RANK",
)


def launched_by_mpiexec(environ=None):
    """True when an MPI launcher started this process (even as the only rank)."""
    environ = os.environ if environ is None else environ
    return any(name in environ for name in MPI_ENVIRONMENT_VARIABLES)


def launcher_rank(environ=None):
    """This process's rank as its launcher set it (0 when none did), read without initialising MPI: for
    messages that only rank 0 prints before anything else runs."""
    environ = os.environ if environ is None else environ
    for name in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK"):
        if environ.get(name, "").isdigit():
            return int(environ[name])
    return 0


def mpi_world():
    """
    (comm, rank, size): MPI.COMM_WORLD and this process's place in it when
    started by mpiexec, else (None, 0, 1).

    :raises RuntimeError: started by mpiexec but mpi4py cannot be loaded (each
        rank would otherwise run alone and write the same files).
    """
    if not launched_by_mpiexec():
        return None, 0, 1
    try:
        from mpi4py import MPI
    except Exception as exc:  # ImportError, or an MPI library that fails to load
        raise RuntimeError(
            f"this process was started by mpiexec but mpi4py cannot be loaded ({exc}); "
            "install it (pip install mpi4py) or run without mpiexec"
        ) from exc
    comm = MPI.COMM_WORLD
    return comm, comm.Get_rank(), comm.Get_size()


def mpi_rank_and_size():
    """(rank, size) under mpiexec, else (0, 1)."""
    _, rank, size = mpi_world()
    return rank, size


def local_rank_and_size(comm):
    """(rank among the processes on this node, their number), from MPI's shared-memory split of ``comm``."""
    from mpi4py import MPI

    node = comm.Split_type(split_type=MPI.COMM_TYPE_SHARED)
    return node.Get_rank(), node.Get_size()
