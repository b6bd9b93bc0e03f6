"""A local stack for a benchmark: the running one named by $COORDINATOR_DEVSTACK_DIR, or a fresh one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agent.devstack import Stack


@contextmanager
def local_stack() -> Iterator[tuple[Stack, Path]]:
    """Yield (stack, scratch directory); a stack started here is stopped afterwards."""
    existing = os.environ.get("COORDINATOR_DEVSTACK_DIR")
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        own = not (existing and Stack(existing).is_up())
        stack = Stack(Path(tmp) / "stack") if own else Stack(existing)  # type: ignore[arg-type]
        if own:
            stack.up()
        try:
            yield stack, Path(tmp)
        finally:
            if own:
                stack.down()
