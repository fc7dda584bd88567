"""Pure scaling policies: a :class:`~policies.snapshot.Snapshot` in, a :class:`~policies.decision.Decision` out."""

from policies.load_factor import decide

__all__ = ["decide"]
