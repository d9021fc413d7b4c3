"""Event loops run on threads of their own (a protocol server, the console's plant agents)."""

from __future__ import annotations

import asyncio


def close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """End what is left on a stopped ``loop`` cleanly, as :func:`asyncio.run` does (cancel the
    tasks still pending, let them finish, close async generators), then close it. Call it on the
    loop's own thread after ``run_forever``/``run_until_complete`` returned."""
    try:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
