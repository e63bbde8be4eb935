"""One batch id, one payload: the first content accepted under an id is recorded, later ones compared.

Ingest and the workflow's intake both claim an id before acting on a batch. The record is written with
Dapr's first-write concurrency, which the Redis state store turns into "create if absent", so two
deliveries racing with different content cannot both win. The record outlives the batch's run
(``RECORD_TTL_S``), so an id stays bound to its content after the outcome too.
"""

from __future__ import annotations

import hashlib
from enum import Enum

from dapr.clients import DaprClient
from dapr.clients.grpc._state import Concurrency, StateOptions

from taskfan.contracts import BATCHES_STORE, TaskBatch
from taskfan.settings import Settings

RECORD_TTL_S = Settings.from_env().record_ttl_s  # RECORD_TTL_S, 7 days by default


class Claim(Enum):
    NEW = "new"  # this content is the first under the id
    SAME = "same"  # the id was claimed before with identical content: a duplicate
    CONFLICT = "conflict"  # the id is bound to other content


def content_digest(batch: TaskBatch) -> str:
    """The same for any two batches whose tasks are equal, whatever their JSON formatting."""
    return hashlib.sha256(batch.model_dump_json(include={"tasks"}).encode()).hexdigest()


def record_key(batch_id: str) -> str:
    return f"batch:{batch_id}"


def conflict_message(batch_id: str) -> str:
    days = RECORD_TTL_S / 86400
    return (f"batch id {batch_id!r} is already in use with different content "
            f"(an id stays bound to its first content for {days:g} days); publish it under another id")


def claim(client: DaprClient, batch: TaskBatch, *, read_first: bool = False) -> Claim:
    """Claim ``batch``'s id for its content. ``read_first``: the caller expects the id to be claimed already
    (the intake, behind ingest), so it reads the record before trying to write one: one sidecar call, where
    a refused first write and the read after it are two."""
    digest = content_digest(batch)
    key = record_key(batch.batch_id)
    if read_first and (existing := client.get_state(BATCHES_STORE, key).data):
        return _compared(existing, digest)
    try:
        client.save_state(BATCHES_STORE, key, digest, options=StateOptions(concurrency=Concurrency.first_write),
                          state_metadata={"ttlInSeconds": str(RECORD_TTL_S)})
        return Claim.NEW
    except Exception:
        existing = client.get_state(BATCHES_STORE, key).data
        if not existing:
            raise  # the write failed for another reason than an existing record
        return _compared(existing, digest)


def _compared(existing: bytes, digest: str) -> Claim:
    return Claim.SAME if existing.decode() == digest else Claim.CONFLICT
