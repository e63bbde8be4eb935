"""A state store as the Redis one behaves through Dapr, for activities' unit tests: ETags, first-write
concurrency ("create if absent"), and the rule that bites: a key once written with first-write concurrency
takes a later write only with its ETag. ``drive`` runs a ``ledger_store`` change against it. Transactions
(``execute_state_transaction``) apply all their operations; the TTL each write asked for is kept in ``ttls``."""

from __future__ import annotations

from typing import Any

from services.workflow import ledger_store


class StateRefused(RuntimeError):
    pass


class FakeDaprState:
    def __init__(self, items: dict[str, bytes] | None = None) -> None:
        self.items: dict[str, bytes] = dict(items or {})
        self.etags: dict[str, int] = {key: 1 for key in self.items}
        self.first_write: set[str] = set()
        self.ttls: dict[str, int] = {}  # key -> the ttlInSeconds its last write asked for

    def item(self, key: str) -> Any:
        return type("Item", (), {"key": key, "data": self.items.get(key, b""), "etag": str(self.etags.get(key, "")),
                                 "error": ""})()

    def put(self, key: str, value: str | bytes, etag: str | None = None, first_write: bool = False,
            ttl: int | None = None) -> None:
        if etag is not None and etag != str(self.etags.get(key, "")):
            raise StateRefused("possible etag mismatch")
        if etag is None and key in self.items and (first_write or key in self.first_write):
            raise StateRefused(f"failed to set key {key}")  # Redis's Lua script refuses it
        if first_write:
            self.first_write.add(key)
        self.items[key] = bytes(bytearray(value)) if isinstance(value, bytes) else value.encode()  # its own copy
        self.etags[key] = self.etags.get(key, 0) + 1
        if ttl is None:
            self.ttls.pop(key, None)
        else:
            self.ttls[key] = ttl

    def delete(self, key: str) -> None:
        self.items.pop(key, None)
        self.etags.pop(key, None)
        self.first_write.discard(key)
        self.ttls.pop(key, None)

    # The async DaprClient's calls the activities make.

    async def get_state(self, store, key):
        return self.item(key)

    async def get_bulk_state(self, store, keys, parallelism=1):
        return type("Bulk", (), {"items": [self.item(k) for k in keys]})()

    async def save_state(self, store, key, value, etag=None, options=None, state_metadata=None):
        self.put(key, value, etag=etag, first_write=options is not None and options.concurrency.name == "first_write")

    async def delete_state(self, store, key):
        self.delete(key)

    async def execute_state_transaction(self, store, operations, transactional_metadata=None):
        for op in operations:
            if op.operation_type.name == "delete":
                self.delete(op.key)
            else:
                self.put(op.key, op.data, etag=op.etag, ttl=_ttl(op.metadata))


def step(state: FakeDaprState, op: Any) -> tuple[Any, Exception | None]:
    """One operation of a ``ledger_store`` change against ``state``: (reply, error to throw in)."""
    if isinstance(op, ledger_store.Get):
        return state.item(op.key), None
    if isinstance(op, ledger_store.GetMany):
        return {k: state.items.get(k) for k in op.keys}, None
    if isinstance(op, ledger_store.Put):
        try:
            state.put(op.key, op.value, etag=op.etag, first_write=op.first_write)
        except StateRefused as exc:
            return None, ledger_store.Conflict(str(exc))
        return None, None
    if isinstance(op, ledger_store.Delete):
        for key in op.keys:
            state.delete(key)
        return None, None
    return None, None  # Pause


def drive(state: FakeDaprState, steps: Any) -> Any:
    """Run a change to its end against ``state``."""
    reply, error = None, None
    while True:
        done, op = ledger_store.advance(steps, reply, error)
        if done:
            return op
        reply, error = step(state, op)


def _ttl(metadata: dict[str, str] | None) -> int | None:
    return int(metadata["ttlInSeconds"]) if metadata and "ttlInSeconds" in metadata else None


class FakeSyncDapr:
    """The blocking DaprClient's state calls (the intake's, the console's), over a FakeDaprState."""

    def __init__(self, state: FakeDaprState | None = None) -> None:
        self.state = state or FakeDaprState()
        self.transactions = 0

    def get_state(self, store, key):
        return self.state.item(key)

    def get_bulk_state(self, store, keys, parallelism=1):
        return type("Bulk", (), {"items": [self.state.item(k) for k in keys]})()

    def save_state(self, store, key, value, etag=None, options=None, state_metadata=None):
        self.state.put(key, value, etag=etag, ttl=_ttl(state_metadata),
                       first_write=options is not None and options.concurrency.name == "first_write")

    def delete_state(self, store, key):
        self.state.delete(key)

    def execute_state_transaction(self, store, operations, transactional_metadata=None):
        self.transactions += 1
        for op in operations:
            if op.operation_type.name == "delete":
                self.state.delete(op.key)
            else:
                self.state.put(op.key, op.data, etag=op.etag, ttl=_ttl(op.metadata))
