"""Shared test setup: no hub access, and fixtures over the builders in tests/tiny.py."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):  # one pytest-xdist worker per core: one thread each, child processes too
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

from tiny import ToyTask, make_tokenizer

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)  # two 2-thread torch processes on 2 cores slow each other 10-25x (ENVIRONMENT.md)


@pytest.fixture
def tokenizer():
    return make_tokenizer()


@pytest.fixture
def toy_task():
    return ToyTask()
