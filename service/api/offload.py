"""Large request bodies decoded, parsed and prepared in a child process, where they cannot
stall the event loop.

Pydantic decodes and validates a JSON document in one C call that holds the GIL from its first
byte to its last, and so does ``np.asarray`` on the lists it makes: moved to the thread pool, the
call still stops the event loop for as long. So a body of up to ``THREAD_BYTES`` is decoded in
the thread pool, and a larger one in a child process, which sends back only what is cheap to
unpickle: NumPy arrays, or an answer already serialized as JSON bytes, or a dataset already
summarised and written to a file in the spool directory
(:func:`service.datasets.service.prepare_inline_json`). An uploaded file is prepared the same
way, by its size: parsing, summarising and writing it hold the GIL too, and ``/healthz`` must
answer within 100 ms.

One child per API process, started (``spawn``: the API process has threads) at the first large
body, and replaced after each one, since the freed Python floats of a decoded body stay with
the allocator (the replacement starts while the API answers other requests). Large bodies take
turns in it: several at once peak at one decode's memory, and a large body never holds the
event loop however many arrive. The measurements behind this are in docs/performance.md.
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from service.errors import ServiceUnavailable

#: Bodies up to this size are decoded in the thread pool: ~15 ms of GIL for 256 KiB of rows.
THREAD_BYTES = 256 * 1024

T = TypeVar("T")


class BodyDecoder:
    """Runs ``work(*args, **kwargs)`` in the thread pool or the child process, by ``size``
    (the bytes of the body it works on). ``work`` must be a module-level function (it is
    pickled by name) whose arguments and result pickle cheaply; the errors it raises reach the
    caller."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    async def run(
        self,
        size: int,
        work: Callable[..., T],
        *args: object,
        on_cancel: Callable[[], object] | None = None,
        **kwargs: object,
    ) -> T:
        """``on_cancel``: called once ``work`` has ended in the child, if the caller was
        cancelled while it ran (a client gone, a shutdown): to delete what it wrote, which
        nobody will collect. (In the thread pool a cancel waits for the work and its result
        returns: the caller's own ``finally`` sees it.)"""
        call = functools.partial(work, *args, **kwargs)
        if size <= THREAD_BYTES:
            return await run_in_threadpool(call)
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                max_tasks_per_child=1,
            )
        future = self._pool.submit(call)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if on_cancel is not None:
                future.add_done_callback(lambda _: on_cancel())
            raise
        except BrokenProcessPool:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            raise ServiceUnavailable(
                "The process that decodes large request bodies ended before this one was "
                "decoded (out of memory?). Retry; a smaller body is more likely to succeed.",
                headers={"Retry-After": "1"},  # a new decoding process starts at once
            ) from None

    def close(self) -> None:
        """Stop the child (after the body it is decoding, if any)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


async def offload(
    request: Request,
    size: int,
    work: Callable[..., T],
    *args: object,
    on_cancel: Callable[[], object] | None = None,
    **kwargs: object,
) -> T:
    """:meth:`BodyDecoder.run` with the app's decoder (``create_app`` makes it)."""
    decoder: BodyDecoder = request.app.state.body_decoder
    return await decoder.run(size, work, *args, on_cancel=on_cancel, **kwargs)


__all__ = ["THREAD_BYTES", "BodyDecoder", "offload"]
