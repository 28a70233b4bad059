"""Small asyncio helpers shared by the long-running workers."""
from __future__ import annotations

import asyncio


async def stop_task(task: asyncio.Task | None) -> None:
    """Cancel a worker task and wait until it has finished (its own clean-up
    runs); a task that already ended is just awaited."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
