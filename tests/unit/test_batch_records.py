"""``batch_records.claim``: one id, one content, whichever side claims first, in one call on the usual path."""

from __future__ import annotations

import pytest

from taskfan.batch_records import Claim, claim, record_key
from taskfan.contracts import TaskBatch
from tests.unit.fake_state import FakeSyncDapr


class CountingDapr(FakeSyncDapr):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def get_state(self, store, key):
        self.calls.append("get")
        return super().get_state(store, key)

    def save_state(self, store, key, value, etag=None, options=None, state_metadata=None):
        self.calls.append("save")
        return super().save_state(store, key, value, etag, options, state_metadata)


# Ids the contract allows with the separator of the layers below (Dapr's `::`; `||` is refused by
# BATCH_ID_PATTERN), dots and the longest.
IDS = ["b", "a::b", "::", "a.b:c-d_e", "x" * 128]


def batch(batch_id: str, title: str = "t") -> TaskBatch:
    return TaskBatch(batch_id=batch_id, tasks=[{"task_id": "t1", "title": title, "description": ""}])


@pytest.mark.parametrize("read_first", [False, True])
@pytest.mark.parametrize("batch_id", IDS)
def test_the_first_content_binds_the_id_and_later_ones_are_compared(batch_id, read_first):
    dapr = CountingDapr()
    assert claim(dapr, batch(batch_id), read_first=read_first) is Claim.NEW
    assert claim(dapr, batch(batch_id), read_first=read_first) is Claim.SAME
    assert claim(dapr, batch(batch_id, title="other"), read_first=read_first) is Claim.CONFLICT
    assert list(dapr.state.items) == [record_key(batch_id)]


def test_read_first_answers_an_id_claimed_before_in_one_read_and_no_write():
    dapr = CountingDapr()
    claim(dapr, batch("b"))  # ingest's claim
    dapr.calls.clear()
    assert claim(dapr, batch("b"), read_first=True) is Claim.SAME
    assert dapr.calls == ["get"]
    dapr.calls.clear()
    assert claim(dapr, batch("b")) is Claim.SAME  # write first: the refused write, then the read
    assert dapr.calls == ["save", "get"]


def test_read_first_still_claims_an_unclaimed_id_with_a_first_write():
    dapr = CountingDapr()
    assert claim(dapr, batch("b"), read_first=True) is Claim.NEW
    assert dapr.calls == ["get", "save"]
    assert record_key("b") in dapr.state.first_write  # a racing claim of other content is refused by the store
