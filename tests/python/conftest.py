"""One running AEX for the whole Python session (see aex_harness.py)."""

import pytest

from aex_harness import AexInstance


@pytest.fixture(scope="session")
def aex():
    instance = AexInstance()
    try:
        yield instance.start()
    finally:
        instance.stop()
