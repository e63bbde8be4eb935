"""A batch's outcome: assembled from its chunks' saved results, recorded, then published, once per batch id
whoever asks (the workflow's activities, a run again after a crash, the reconciler for a workflow that ended
without one); and the dead letter of a batch that cannot have one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from dapr.aio.clients import DaprClient
from dapr.clients.grpc._state import Concurrency, StateOptions

from services.workflow import aggregate, faults
from services.workflow.models import BatchFailure, ChunkRef, OutcomeRecord, OutcomeSummary, PublishInput
from services.workflow.state_keys import STATE_TTL_S, outcome_key, results_key, tasks_key
from taskfan import events
from taskfan.contracts import (
    DEADLETTER_TOPIC,
    OUTCOME_EVENT_TYPE,
    OUTCOMES_TOPIC,
    PUBSUB,
    RESULT_LIST,
    STATESTORE,
    TASK_LIST,
    AppId,
    Task,
    TaskResult,
)


async def publish_once(client: DaprClient, inp: PublishInput, missing: Callable[[int], str],
                       ended: str = "COMPLETED", saved: Mapping[int, list[TaskResult]] | None = None,
                       ) -> OutcomeSummary:
    """Publish the batch's outcome from its saved chunk results; a chunk without results (lost, or never
    finished) reports each of its tasks as failed with ``missing(index)``: every task is accounted for.

    One outcome per batch id, whoever calls this and however often: the outcome is recorded (``OutcomeRecord``,
    first write wins) before it is published, and a caller that finds a record publishes the recorded event if
    it is not marked published yet, nothing otherwise. A crash can make the engine run this again (its history
    lost the first run, measured by the soak), and the reconciler may answer for a workflow terminated while
    it was publishing: both end in the one recorded event. ``ended``: how the workflow ended, for the record.
    ``saved``: chunks' results the caller has just saved, by index (the run of a batch's only chunk), used as
    they are instead of read back. With every chunk's results at hand, the record is not read first: the
    first-write save finds one recorded earlier (a run again), and that one is used.
    """
    key = outcome_key(inp.batch_id)
    every_chunk_at_hand = saved is not None and len(saved) == inp.chunks
    record = None if every_chunk_at_hand else await record_of(client, inp.batch_id)
    if record is None:
        record = await _record_outcome(client, inp, missing, ended, saved)
    if not record.published:
        assert record.event is not None
        await client.publish_event(PUBSUB, OUTCOMES_TOPIC, record.event.encode(),
                                   data_content_type=events.CLOUDEVENT_CONTENT_TYPE)
        faults.point(faults.AFTER_PUBLISH)
        # With its ETag: Dapr's Redis store takes a later write to a key written first-write only so.
        current = await client.get_state(STATESTORE, key)
        published = record.model_copy(update={"event": None, "published": True})
        await client.save_state(STATESTORE, key, published.model_dump_json(), etag=current.etag or None,
                                state_metadata={"ttlInSeconds": str(STATE_TTL_S)})
    return record.summary


async def record_of(client: DaprClient, batch_id: str) -> OutcomeRecord | None:
    item = await client.get_state(STATESTORE, outcome_key(batch_id))
    return OutcomeRecord.model_validate_json(item.data) if item.data else None


async def _record_outcome(client: DaprClient, inp: PublishInput, missing: Callable[[int], str],
                          ended: str, saved: Mapping[int, list[TaskResult]] | None = None) -> OutcomeRecord:
    """Aggregate the outcome and record it as intended; if another caller recorded one first, that one."""
    saved = saved or {}
    keys = [results_key(inp.batch_id, i) for i in range(inp.chunks)]
    unread = [key for index, key in enumerate(keys) if index not in saved]
    items = {item.key: item.data for item in (await client.get_bulk_state(STATESTORE, unread, parallelism=8)).items
             } if unread else {}
    results: list[TaskResult] = []
    for index, key in enumerate(keys):
        if index in saved:
            results += saved[index]
        elif items.get(key):
            results += RESULT_LIST.validate_json(items[key])
        else:
            tasks = await chunk_tasks(client, ChunkRef(batch_id=inp.batch_id, index=index))
            results += [aggregate.failed(t.task_id, "chunk", missing(index)) for t in tasks]
    outcome = aggregate.aggregate(inp.batch_id, results, inp.started_at, inp.finished_at)
    # A stable event id: a subscriber can drop the redelivery of a publish run again.
    data = events.encode(OUTCOME_EVENT_TYPE, outcome, source=AppId.WORKFLOW,
                         event_id=f"outcome:{inp.batch_id}", subject=inp.batch_id)
    record = OutcomeRecord(summary=OutcomeSummary.model_validate(outcome.model_dump(exclude={"results"})),
                           event=data.decode(), ended=ended)
    try:
        await client.save_state(STATESTORE, outcome_key(inp.batch_id), record.model_dump_json(),
                                options=_FIRST_WRITE, state_metadata={"ttlInSeconds": str(STATE_TTL_S)})
    except Exception:
        recorded = await record_of(client, inp.batch_id)
        if recorded is None:
            raise  # the write failed for another reason than a record written first
        return recorded
    return record


_FIRST_WRITE = StateOptions(concurrency=Concurrency.first_write)


async def chunk_tasks(client: DaprClient, chunk: ChunkRef) -> list[Task]:
    """A chunk's tasks from the state store (the intake put them there)."""
    item = await client.get_state(STATESTORE, tasks_key(chunk.batch_id, chunk.index))
    if not item.data:
        raise LookupError(f"tasks of chunk {chunk.index} of batch {chunk.batch_id} are not in the state store")
    return TASK_LIST.validate_json(item.data)


async def dead_letter(client: DaprClient, inp: BatchFailure) -> None:
    data = events.dead_letter(inp.reason, {"batch_id": inp.batch_id, "total": inp.total}, source=AppId.WORKFLOW)
    await client.publish_event(PUBSUB, DEADLETTER_TOPIC, data, data_content_type=events.CLOUDEVENT_CONTENT_TYPE)
