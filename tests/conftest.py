import os

import pytest
import torch

# Under pytest-xdist (`make test`: one worker per core) each worker, and every process a test starts from it, runs
# one intra-op thread, so the workers do not oversubscribe the cores (two busy two-thread processes on two cores
# run far slower than two one-thread ones). A single pytest process keeps two threads.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ.get("TD_TEST_THREADS", "1" if WORKERS > 1 else "2")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module: small networks run faster so, and the tests that compare bits with worker
    subprocesses (which use one thread too) need the same setting. Use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
