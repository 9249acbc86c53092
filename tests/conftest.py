import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Tiny test models gain nothing from intra-op threads, and a second thread only adds contention
# with the subprocesses (mpiexec ranks, CLIs) some tests start.
torch.set_num_threads(1)


@pytest.fixture
def mpi_env():
    """Environment for mpiexec subprocesses: on CPU (several ranks cannot share one GPU under NCCL),
    and allowed as root (Open MPI, which GPU images ship, refuses root without these)."""
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMPI_ALLOW_RUN_AS_ROOT": "1",
            "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


@pytest.fixture
def repo_root():
    return ROOT
