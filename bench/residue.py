"""What a stack keeps, by owner: Redis keys and their memory, the streams, the append-only file and the
scheduler's store. ``per_batch`` turns two snapshots into what each finished batch left behind (README,
"What stays behind"); the end-to-end retention test and ``make soak-long`` use it.

    .venv/bin/python -m bench.residue [--batches 200] [--tasks 20]

runs that measurement on the running stack (``make up``): publishes the batches through ingest, waits for
their outcomes and for Dapr's retention of their workflows, and prints the figures.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import redis

from services.console.history import KEY_PREFIX
from taskfan import stack_secrets
from taskfan.contracts import ADMISSION_LEDGER_KEY, OUTCOMES_TOPIC
from taskfan.stack import Stack

# Who owns each kind of key (and deletes it): README, "What stays behind".
WORKFLOW_STATE = "workflow state"  # Dapr's: purged by its workflow state retention policy
OUTCOME_RECORD = "outcome record"  # the workflow app's: a TTL
BATCH_RECORD = "batch record"  # ingest's and the intake's: a TTL
BATCH_DATA = "batch data"  # the workflow app's: deleted after the outcome, a TTL for what a crash leaves
ADMISSION = "admission ledger"  # the workflow app's: an entry leaves when its batch is answered
STREAM = "stream"  # Dapr's pub/sub: trimmed by the stream keeper (services/ingest/capacity.py)
CONSOLE = "console history"  # the console's: bounded in all (services/console/history.py), a TTL as a backstop
# The console's sessions and sign-in codes (services/console/sessions.py): bounded per replica, each its TTL.
CONSOLE_SIGN_IN = "console sign-in"
SIGN_IN_KINDS = ("session", "code", "redeemed")
OTHER = "other"


def owner(key: str) -> str:
    if "||dapr.internal." in key:
        return WORKFLOW_STATE
    name = key.split("||", 1)[-1]
    if name.startswith(ADMISSION_LEDGER_KEY):
        return ADMISSION
    if name.split("~")[:2] in ([KEY_PREFIX, kind] for kind in SIGN_IN_KINDS):
        return CONSOLE_SIGN_IN
    if name.startswith(KEY_PREFIX + "~"):
        return CONSOLE
    if name.startswith("taskfan:") and name.endswith(":outcome"):
        return OUTCOME_RECORD
    if name.startswith("taskfan:"):
        return BATCH_DATA
    if name.startswith("batch:"):
        return BATCH_RECORD
    return OTHER


@dataclass
class Snapshot:
    keys: dict[str, int] = field(default_factory=dict)  # per owner, streams apart
    bytes: dict[str, int] = field(default_factory=dict)  # MEMORY USAGE per owner
    stream_entries: dict[str, int] = field(default_factory=dict)
    used_memory: int = 0
    aof_bytes: int = 0
    scheduler_keys: int = 0  # the scheduler's etcd: its jobs (reminders, timers) and its own few keys
    scheduler_db_in_use: int = 0  # bytes of etcd's database in use (freed pages excluded)
    scheduler_db_bytes: int = 0  # its database file, freed pages included (shrinks only by defragmentation)
    scheduler_dir_bytes: int = 0  # its data directory: the database, write-ahead logs and snapshots

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def snapshot(client: redis.Redis, stack: Stack) -> Snapshot:
    keys: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    entries: dict[str, int] = {}
    for raw in client.scan_iter(count=1000):
        key = raw.decode(errors="backslashreplace")
        if client.type(raw) == b"stream":
            entries[key] = client.xlen(raw)
            sizes[STREAM] += client.memory_usage(raw, samples=0) or 0
            continue
        kind = owner(key)
        keys[kind] += 1
        sizes[kind] += client.memory_usage(raw, samples=0) or 0
    etcd = f"http://127.0.0.1:{stack.topology.scheduler_ports[2]}/v3"  # the scheduler's embedded etcd
    status = httpx.post(f"{etcd}/maintenance/status", json={}, timeout=10).json()
    count = httpx.post(f"{etcd}/kv/range", json={"key": "AA==", "range_end": "AA==", "count_only": True},
                       timeout=10).json()
    return Snapshot(keys=dict(keys), bytes=dict(sizes), stream_entries=entries,
                    used_memory=int(client.info("memory")["used_memory"]),
                    aof_bytes=dir_bytes(stack.run_dir / "redis" / "appendonlydir"),
                    scheduler_keys=int(count.get("count", 0)), scheduler_db_in_use=int(status["dbSizeInUse"]),
                    scheduler_db_bytes=int(status["dbSize"]),
                    scheduler_dir_bytes=dir_bytes(stack.run_dir / "scheduler"))


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.glob("**/*") if p.is_file()) if path.exists() else 0


def per_batch(before: Snapshot, after: Snapshot, batches: int) -> dict[str, float]:
    """What each of ``batches`` finished batches left: keys and bytes per owner, and the stores' growth."""
    figures: dict[str, float] = {}
    for kind in sorted({*before.keys, *after.keys}):
        figures[f"keys: {kind}"] = (after.keys.get(kind, 0) - before.keys.get(kind, 0)) / batches
        figures[f"bytes: {kind}"] = (after.bytes.get(kind, 0) - before.bytes.get(kind, 0)) / batches
    figures["bytes: all but streams"] = sum(v for k, v in figures.items() if k.startswith("bytes: "))
    figures["bytes: streams"] = (after.bytes.get(STREAM, 0) - before.bytes.get(STREAM, 0)) / batches
    for name in ("aof_bytes", "scheduler_keys", "scheduler_db_in_use", "scheduler_dir_bytes"):
        figures[name] = (getattr(after, name) - getattr(before, name)) / batches
    return figures


def publish_and_settle(stack: Stack, client: redis.Redis, batches: int, tasks: int, settle_s: float) -> list[str]:
    """Publish the batches through ingest, wait for one outcome each, then ``settle_s`` more (retention)."""
    settings = stack_secrets.for_clients(stack.settings, stack.run_file)
    prefix = f"residue-{uuid.uuid4().hex[:8]}"
    ids = [f"{prefix}-{i}" for i in range(batches)]
    start = client.xinfo_stream(OUTCOMES_TOPIC)["last-generated-id"] if client.exists(OUTCOMES_TOPIC) else b"0-0"
    with httpx.Client(timeout=30, headers=stack_secrets.ingest_headers(settings.ingest_token)) as http:
        for batch_id in ids:
            response = http.post(f"{stack.ingest_url}/batches", json={"batch_id": batch_id, "tasks": [
                {"task_id": f"t{i}", "title": "Fix login", "description": "500 errors"} for i in range(tasks)]})
            response.raise_for_status()
    waiting, deadline = set(ids), time.monotonic() + 120 + batches
    while waiting and time.monotonic() < deadline:
        for _, fields in client.xrange(OUTCOMES_TOPIC, min=start):
            waiting.discard(json.loads(fields[b"data"])["data"]["batch_id"])
        time.sleep(0.5)
    if waiting:
        raise RuntimeError(f"{len(waiting)} of {batches} batches have no outcome")
    time.sleep(settle_s)
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--tasks", type=int, default=20, help="tasks per batch")
    parser.add_argument("--settle", type=float, default=None,
                        help="seconds to wait after the last outcome (default: WORKFLOW_RETENTION_S + 20)")
    args = parser.parse_args()
    stack = Stack()
    if stack.running() is None:
        raise SystemExit("no stack is running: `make up` first")
    settings = stack_secrets.for_clients(stack.settings, stack.run_file)
    client = redis.Redis(host=settings.redis_host, port=settings.redis_port, password=settings.redis_password)
    before = snapshot(client, stack)
    settle = stack.settings.workflow_retention_s + 20 if args.settle is None else args.settle
    print(f"publishing {args.batches} batches of {args.tasks} tasks, then {settle:.0f} s to settle", flush=True)
    publish_and_settle(stack, client, args.batches, args.tasks, settle)
    after = snapshot(client, stack)
    for name, value in per_batch(before, after, args.batches).items():
        print(f"  per batch, {name}: {value:,.1f}")


if __name__ == "__main__":
    main()
