"""Named operations for upkeep: switches, health samples, services, engines, intake and retention."""

from __future__ import annotations


class UpkeepOps:
    """Mixed into `Unit`."""
