"""Where a batch's data lives outside workflow history: its state-store keys.

No valid batch id can collide with another's key: keys end in a fixed ``:<kind>:<number>`` that parses
from the right.
"""

from collections.abc import Iterator

from dapr.clients.grpc._request import TransactionalStateOperation, TransactionOperationType

from taskfan.settings import Settings

# The outcome record's life, and batch data left behind by a crash expires (RECORD_TTL_S, 7 days).
STATE_TTL_S = Settings.from_env().record_ttl_s


def tasks_key(batch_id: str, index: int) -> str:
    return f"taskfan:{batch_id}:tasks:{index:05d}"


def results_key(batch_id: str, index: int) -> str:
    return f"taskfan:{batch_id}:results:{index:05d}"


def outcome_key(batch_id: str) -> str:
    """The summary of a batch's published outcome: its presence means "published, do not again"."""
    return f"taskfan:{batch_id}:outcome"


def progress_key(batch_id: str, index: int, run: int) -> str:
    """What run ``run`` of a chunk left for the next (``ChunkProgress``); one key per run, so that a run
    the engine repeats reads the same input again."""
    return f"taskfan:{batch_id}:progress:{index:05d}.{run}"


# A batch's keys deleted per state-store transaction (one sidecar call each) once its outcome is out, or it is
# purged.
DELETES_PER_TRANSACTION = 200


def deletions(keys: list[str]) -> Iterator[list[TransactionalStateOperation]]:
    """The keys' deletes, as the state-store transactions that make them (``DELETES_PER_TRANSACTION`` each)."""
    for start in range(0, len(keys), DELETES_PER_TRANSACTION):
        yield [TransactionalStateOperation(key, operation_type=TransactionOperationType.delete)
               for key in keys[start:start + DELETES_PER_TRANSACTION]]

# A chunk's live stages matter only while its batch runs; refreshed at every write, gone this long after the last.
STAGES_TTL_S = 3600


def stages_key(batch_id: str, index: int) -> str:
    """Where each task of a chunk is now (``live.ChunkStages``): any workflow process answers the console from it."""
    return f"taskfan:{batch_id}:stages:{index:05d}"
