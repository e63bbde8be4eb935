import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from taskfan.cli.schemas import schema_documents
from taskfan.contracts import (
    MAX_TASKS_PER_BATCH,
    BatchRequest,
    TaskBatch,
    describe_validation_error,
    workflow_instance_id,
)

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def task(i, **extra):
    return {"task_id": f"t{i}", "title": "Some title", "description": "A long enough description", **extra}


def test_batch_id_optional_on_request_but_required_on_event():
    assert BatchRequest.model_validate({"tasks": [task(1)]}).batch_id is None
    with pytest.raises(ValidationError):
        TaskBatch.model_validate({"tasks": [task(1)]})


@pytest.mark.parametrize("batch_id", ["a", "A-b_c.d:e", "x" * 128])
def test_good_batch_ids(batch_id):
    TaskBatch.model_validate({"batch_id": batch_id, "tasks": [task(1)]})


@pytest.mark.parametrize("batch_id", ["", "x" * 129, "has space", "slash/no", "ünï"])
def test_bad_batch_ids(batch_id):
    with pytest.raises(ValidationError):
        TaskBatch.model_validate({"batch_id": batch_id, "tasks": [task(1)]})


def test_empty_batch_is_refused():
    with pytest.raises(ValidationError) as err:
        BatchRequest.model_validate({"tasks": []})
    assert "tasks" in describe_validation_error(err.value)


def test_duplicate_task_ids_are_named():
    with pytest.raises(ValidationError) as err:
        BatchRequest.model_validate({"tasks": [task(1), task(2), task(1)]})
    assert "'t1'" in describe_validation_error(err.value)


def test_unknown_fields_are_refused():
    with pytest.raises(ValidationError) as err:
        BatchRequest.model_validate({"tasks": [task(1, titel="typo")]})
    assert "tasks.0.titel" in describe_validation_error(err.value)


def test_too_many_tasks():
    with pytest.raises(ValidationError):
        BatchRequest.model_validate({"tasks": [task(i) for i in range(MAX_TASKS_PER_BATCH + 1)]})


def test_published_schemas_match_models():
    for name, text in schema_documents().items():
        published = SCHEMAS / name
        assert published.exists(), f"{name} missing: run `make schemas`"
        assert json.loads(published.read_text()) == json.loads(text), f"{name} is stale: run `make schemas`"


@given(st.text(alphabet="ABCXYZabcxyz0189._:-", min_size=1, max_size=128),
       st.text(alphabet="ABCXYZabcxyz0189._:-", min_size=1, max_size=128))
def test_a_batch_ids_workflow_instance_is_its_own_and_free_of_daprs_separators(one, other):
    instance = workflow_instance_id(one)
    # Dapr reads an activity's instance back as what comes before the first '::' of
    # '<instance>::<task>::<generation>'; actor state keys are joined with '||'.
    assert f"{instance}::run_chunk::0".split("::")[0] == instance
    assert "||" not in instance and len(instance) == len(one)
    assert (workflow_instance_id(other) == instance) == (other == one)
