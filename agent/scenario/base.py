"""Shared pieces of the scenario models (defined in ``agent.fields``, which drivers use too)."""

from agent.fields import NAME_PATTERN, Duration, Strict, format_duration, is_name

__all__ = ["NAME_PATTERN", "Duration", "Strict", "format_duration", "is_name"]
