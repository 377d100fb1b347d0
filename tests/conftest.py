"""Shared test fixtures: paths to the committed real-record fixtures, ../shared/data and the test bundle;
the shipped default classifier and a real 12-lead record."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import kmerl_edge as ke

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
RECORDS = FIXTURES / "records"
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def records_dir() -> Path:
    return RECORDS


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present on this machine")
    return SHARED_DATA


@pytest.fixture(scope="session")
def test_bundle_path() -> Path:
    """The committed random-weights bundle (kmerl-test-micro, torch + ONNX fp32). Read-only: copy to modify."""
    return FIXTURES / "test_bundle"


@pytest.fixture(scope="module")
def default_clf() -> ke.Classifier:
    """``kmerl_edge.load()`` on torch: the shipped default bundle with its 12-lead companion."""
    return ke.load(backend="torch")


@pytest.fixture(scope="module")
def rec12(records_dir: Path) -> ke.Record:
    """A real 12-lead PTB-XL record (500 Hz) from the committed fixtures."""
    return ke.read_record(records_dir / "00001_hr")
