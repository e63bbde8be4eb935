"""A state store as the Redis one behaves through Dapr, for activities' unit tests: ETags, first-write
concurrency ("create if absent"), and the rule that bites: a key once written with first-write concurrency
takes a later write only with its ETag."""

from __future__ import annotations


class FakeDaprState:
    def __init__(self, items: dict[str, bytes] | None = None) -> None:
        self.items: dict[str, bytes] = dict(items or {})
        self.etags: dict[str, int] = {key: 1 for key in self.items}
        self.first_write: set[str] = set()

    async def get_state(self, store, key):
        return type("Item", (), {"data": self.items.get(key, b""), "etag": str(self.etags.get(key, ""))})()

    async def get_bulk_state(self, store, keys, parallelism=1):
        items = [type("Item", (), {"key": k, "data": self.items.get(k, b"")})() for k in keys]
        return type("Bulk", (), {"items": items})()

    async def save_state(self, store, key, value, etag=None, options=None, state_metadata=None):
        first_write = options is not None and options.concurrency.name == "first_write"
        if etag is not None and etag != str(self.etags.get(key, "")):
            raise RuntimeError("possible etag mismatch")
        if etag is None and key in self.items and (first_write or key in self.first_write):
            raise RuntimeError(f"failed to set key {key}")  # Redis's Lua script refuses it
        if first_write:
            self.first_write.add(key)
        self.items[key] = value.encode()
        self.etags[key] = self.etags.get(key, 0) + 1

    async def delete_state(self, store, key):
        self.items.pop(key, None)
        self.etags.pop(key, None)
        self.first_write.discard(key)
