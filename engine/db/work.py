"""Named operations on the work itself: claims, completions, heartbeats, attempts, settling, rescues."""

from __future__ import annotations


class WorkOps:
    """Mixed into `Unit`; every operation that ends or moves an attempt is fenced by its lease token."""
