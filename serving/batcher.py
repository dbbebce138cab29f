"""Requests that arrive together are decided together: one engine batch, one audit-store commit group."""

from __future__ import annotations

import asyncio
from typing import Any

from restock.serving.artifact import ArtifactError
from restock.serving.audit import GroupCommitter
from restock.serving.engine import MAX_BATCH
from restock.serving.service import DecisionService


class ComputeFailed(Exception):
    """The decision computation raised something other than ArtifactError (its cause)."""


class Batcher:
    """Decides the requests that arrive together in one `DecisionService.compute` call, then hands
    their entries to the `GroupCommitter` as one group.

    ``submit`` queues a validated request and returns an asyncio future of ``[(request_id, response,
    status)]``; the first request of a burst schedules ``flush`` with ``call_soon``, so every request
    whose body the event loop read in the same pass (under load, many) joins it. Batching through the
    engine costs a fraction of deciding one request at a time (the kernel, the shield and the ONNX
    session run once per batch); a lone request is decided on the next loop pass, as before. The future
    resolves only once the audit store has committed the entries (the committer's future), so no
    response is sent before its record is durable.
    """

    def __init__(self, svc: DecisionService, committer: GroupCommitter, max_batch: int = MAX_BATCH):
        self.svc = svc
        self.committer = committer
        self.max_batch = max_batch
        self.pending: list[tuple[Any, Any, asyncio.Future]] = []
        self.scheduled = False
        self.batches = 0

    def submit(self, req, ns) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.pending.append((req, ns, fut))
        if not self.scheduled:
            self.scheduled = True
            loop.call_soon(self.flush, loop)
        return fut

    def flush(self, loop) -> None:
        self.scheduled = False
        todo, self.pending = self.pending, []
        for i in range(0, len(todo), self.max_batch):
            self._run(loop, todo[i : i + self.max_batch])

    def _run(self, loop, batch: list) -> None:
        try:
            self.svc.refresh()
            entries = self.svc.compute([(req, ns) for req, ns, _ in batch])
        except Exception as exc:
            err = exc if isinstance(exc, ArtifactError) else ComputeFailed(str(exc))
            if err is not exc:
                err.__cause__ = exc
            for _, _, f in batch:
                if not f.done():
                    f.set_exception(err)
            return
        self.batches += 1
        cf = self.committer.submit(entries)
        cf.add_done_callback(lambda cf: loop.call_soon_threadsafe(self._resolve, batch, cf))

    @staticmethod
    def _resolve(batch: list, cf) -> None:
        exc = cf.exception()
        if exc is not None:
            for _, _, f in batch:
                if not f.done():
                    f.set_exception(exc)
            return
        for (_, _, f), r in zip(batch, cf.result(), strict=True):
            if not f.done():
                f.set_result([r])
