"""sfpo.core tests run on toy tensors, where intra-op threads only add synchronisation: one thread per test
(restored afterwards, so tests elsewhere keep their setting) makes each file take seconds on a busy machine."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
