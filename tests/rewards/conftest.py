"""Fixtures for the reward tests: one math-verify worker per test session (starting one costs ~0.5 s)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest

from sfpo.rewards import MathVerifier


@pytest.fixture(scope="session")
def verifier():
    with MathVerifier(timeout_s=20.0) as v:  # generous: a cold sympy path on a busy 2-core box must not flake
        yield v
