import os

import numpy as np
import pytest
import torch

os.environ.setdefault("TVM_NUM_THREADS", "2")
torch.set_num_threads(2)

SMALL = (64, 32)  # input size for fast tests (multiples of 32)


@pytest.fixture(scope="session")
def small_r18():
    from frontend.zoo import zoo_model
    return {s: zoo_model("cmnas-resnet18", s, seed=1, input_size=SMALL) for s in ("all-split", "all-shared", "random:7")}


@pytest.fixture
def rng():
    return np.random.default_rng(0)
