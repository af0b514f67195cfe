"""Failures that retrying cannot mend: the run fails at once, saying why."""

from __future__ import annotations


class BadInput(ValueError):
    """The video, its parameters or its model cannot be used: retrying cannot help."""


class ScorerRejected(BadInput):
    """The scorer refused its inputs (bad model, unreadable frames: its exit code 2), on any machine."""
