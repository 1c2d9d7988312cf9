"""Named operations behind the operator's verbs: select, plan and apply (engine.verbs keeps the policy)."""

from __future__ import annotations


class OperatorOps:
    """Mixed into `Unit`; every change to a row a worker may hold is fenced or locked."""
