"""Shared test fixtures and markers.

- ``shared_data``: the path of ``../shared/data`` beside the checkout (or $COPYMARK_SHARED_DATA);
  tests that need a folder of it call ``require_shared(...)`` and skip with a clear reason.
- ``one_thread``: torch on one thread for a test (tiny nets);
- ``gpu`` tests skip without CUDA; ``browser`` tests skip without Debian's chromium.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("COPYMARK_SHARED_DATA", ROOT.parent / "shared" / "data"))

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def one_thread():
    """Torch on one thread for the test: tiny nets run faster single-threaded, far faster when the
    shared cores are busy (modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def require_shared(*parts: str) -> Path:
    """Path under ../shared/data, or skip the test naming what is missing."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"needs {p} (the shared data folder beside the checkout); not present here")
    return p


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def pytest_collection_modifyitems(config, items):
    no_cuda = not torch.cuda.is_available()
    no_browser = chromium_path() is None
    for item in items:
        if no_cuda and "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="needs CUDA (gpu marker); no GPU here"))
        if no_browser and "browser" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="needs Debian's chromium (`make test` installs it with apt-get)"))


@pytest.fixture
def shared_data() -> Path:
    return SHARED_DATA


@pytest.fixture
def artifacts_dir() -> Path:
    """Folder for test artifacts kept after the run (screenshots, reports)."""
    d = ROOT / "test-artifacts"
    d.mkdir(exist_ok=True)
    return d
