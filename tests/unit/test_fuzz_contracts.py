"""Property-based fuzzing of the contracts and event decoding (bounded: a few hundred examples each).

Whatever arrives, only the defined errors escape; every valid batch round-trips exactly, in any script.
"""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ingest.api import RejectedBatch, parse_batch
from taskfan import events
from taskfan.contracts import (
    MAX_DESCRIPTION_CHARS,
    MAX_TASK_ID_CHARS,
    MAX_TITLE_CHARS,
    TASK_BATCH_EVENT_TYPE,
    TaskBatch,
)

BOUNDED = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any Unicode text, control characters included; lone surrogates aside (UTF-8 cannot carry them).
text = st.text(alphabet=st.characters(exclude_categories=("Cs",)))
batch_ids = st.from_regex(r"\A[A-Za-z0-9._:-]{1,128}\Z")
tasks = st.lists(
    st.fixed_dictionaries({
        "task_id": text.filter(lambda s: 1 <= len(s) <= MAX_TASK_ID_CHARS),
        "title": st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=MAX_TITLE_CHARS),
        "description": st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=MAX_DESCRIPTION_CHARS),
    }),
    min_size=1, max_size=20, unique_by=lambda t: t["task_id"],
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(text, children, max_size=5),
    max_leaves=20,
)


@BOUNDED
@given(batch_id=batch_ids, tasks=tasks)
def test_a_valid_batch_round_trips_exactly_through_its_event(batch_id, tasks):
    batch = TaskBatch.model_validate({"batch_id": batch_id, "tasks": tasks})
    raw = events.encode(TASK_BATCH_EVENT_TYPE, batch)
    assert events.decode(raw, TaskBatch) == batch
    assert len(raw) < len(json.dumps(tasks, ensure_ascii=False).encode()) + 1024  # no escaping growth


@BOUNDED
@given(raw=st.binary(max_size=2048) | text.map(str.encode))
def test_any_bytes_decode_to_a_batch_or_an_event_error(raw):
    try:
        events.decode(raw, TaskBatch)
    except events.EventError as exc:
        assert str(exc)


@BOUNDED
@given(data=json_values, envelope=st.booleans())
def test_any_json_decodes_to_a_batch_or_an_event_error(data, envelope):
    document = {"specversion": "1.0", "id": "1", "source": "s", "type": "t", "data": data} if envelope else data
    try:
        events.decode(json.dumps(document).encode(), TaskBatch)
    except events.EventError as exc:
        assert str(exc)


@BOUNDED
@given(body=json_values.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=1024))
def test_any_request_body_is_a_batch_or_a_rejection_with_a_status(body):
    try:
        parse_batch(body)
    except RejectedBatch as exc:
        assert exc.status in (400, 413, 422) and str(exc)
