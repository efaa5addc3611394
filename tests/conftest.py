import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("TD_TEST_THREADS", "2")))


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
