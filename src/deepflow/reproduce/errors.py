"""The one error of ``deepflow reproduce``: a version that cannot be rebuilt, and why, in one line."""

from __future__ import annotations


class ReproduceError(RuntimeError):
    """Code, data or environment of a version cannot be restored; the message names which and why."""
