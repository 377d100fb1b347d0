"""Errors of the fleet path (all :class:`kmerl_edge.KmerlError`)."""

from __future__ import annotations

from kmerl_edge._errors import KmerlError

__all__ = ["FleetError", "FleetConfigError"]


class FleetError(KmerlError):
    """Base class of the fleet path's errors."""


class FleetConfigError(FleetError, ValueError):
    """A broker URL, shard or fleet option that cannot work."""
