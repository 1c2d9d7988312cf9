"""Console tests: each gets a freshly seeded workspace on a fixed clock and no engine."""

from __future__ import annotations

import pytest
from console_fixtures import seeded_workspace


@pytest.fixture
def seeded(tmp_path):
    ws, clock = seeded_workspace(tmp_path / "ws")
    yield ws, clock
    ws.close()
