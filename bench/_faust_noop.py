"""A faust app whose one agent reads a topic and does nothing: faust's own cost per record.

Run by bench/worker_throughput.py as a child process:
    python bench/_faust_noop.py BOOTSTRAP TOPIC APP_ID
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import faust


def main() -> None:
    bootstrap, topic_name, app_id = sys.argv[1:4]
    app = faust.App(app_id, broker=f"kafka://{bootstrap}", store="memory://", web_enabled=False,
                    datadir=str(Path(tempfile.gettempdir()) / f"{app_id}-data"),  # not the caller's cwd
                    consumer_auto_offset_reset="earliest", broker_commit_interval=1.0,
                    key_serializer="raw", value_serializer="raw")
    topic = app.topic(topic_name, key_type=bytes, value_type=bytes)

    @app.agent(topic)
    async def nothing(stream: faust.StreamT) -> None:
        async for _ in stream.events():
            pass

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()


if __name__ == "__main__":
    main()
