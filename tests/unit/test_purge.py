"""``taskfan batches purge``'s path, each part alone: the workflow app's answer (what it deletes, what it refuses),
the console's route (its doors, its book forgetting) and the rule of what may be purged."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from dapr.ext.workflow import WorkflowStatus

from services.console.history import HEAD_KEY, detail_key
from services.console.routes.signin import ACTION_HEADER
from services.workflow.console_api import ConsoleAnswers, purge_refusal
from services.workflow.ledger_store import LedgerStore
from services.workflow.live import LiveBatches
from services.workflow.models import BatchInput, OutcomeRecord, Purge
from services.workflow.state_keys import outcome_key, results_key, tasks_key
from taskfan.batch_records import record_key
from taskfan.contracts import workflow_instance_id
from tests.unit.fake_state import FakeDaprState, FakeSyncDapr
from tests.unit.test_console import FakeWorkflow, batch, new_book, outcome, store_of
from tests.unit.test_console_doors import OPERATOR, VIEWER, new_console, sign_in


@pytest.mark.parametrize("status", [WorkflowStatus.RUNNING, WorkflowStatus.PENDING, WorkflowStatus.SUSPENDED,
                                    WorkflowStatus.STALLED])
def test_a_running_or_queued_batch_is_never_purged(status):
    assert "only a finished batch" in (purge_refusal(status, outcome_recorded=True) or "")


def test_an_ended_batch_is_purged_once_its_outcome_is_out():
    assert "not published yet" in (purge_refusal(WorkflowStatus.TERMINATED, outcome_recorded=False) or "")
    assert purge_refusal(WorkflowStatus.COMPLETED, outcome_recorded=True) is None
    assert purge_refusal(None, outcome_recorded=True) is None  # its workflow purged already (retention)
    assert purge_refusal(None, outcome_recorded=False) is None  # nothing ran: whatever is left may go


@dataclass
class WorkflowState:
    runtime_status: WorkflowStatus
    serialized_input: str


class FakeWorkflows:
    def __init__(self, states: dict[str, WorkflowState]) -> None:
        self.states = states
        self.purged: list[str] = []

    def get_workflow_state(self, instance_id: str, fetch_payloads: bool = True) -> WorkflowState | None:
        return self.states.get(instance_id)

    def purge_workflow(self, instance_id: str) -> None:
        self.purged.append(instance_id)
        del self.states[instance_id]


def recorded(batch_id: str) -> bytes:
    return OutcomeRecord.model_validate({"summary": {"batch_id": batch_id, "total": 1, "completed": 1, "rejected": 0,
                                                     "failed": 0, "average_score": 1.0, "started_at": "t0",
                                                     "finished_at": "t1"}, "published": True,
                                         "ended": "COMPLETED"}).model_dump_json().encode()


def answers_over(status: WorkflowStatus | None, with_outcome: bool = True) -> tuple[ConsoleAnswers, FakeDaprState,
                                                                                      FakeWorkflows]:
    """The workflow app's answers for batch ``b`` (2 chunks, data left of each), and a stranger's record."""
    state = FakeDaprState()
    for key in (record_key("b"), tasks_key("b", 0), results_key("b", 1), record_key("other")):
        state.put(key, b"x")
    if with_outcome:
        state.put(outcome_key("b"), recorded("b"))
    instance = BatchInput(batch_id="b", total=2, chunks=2, max_in_flight=1).model_dump_json()
    workflows = FakeWorkflows({} if status is None else {workflow_instance_id("b"): WorkflowState(status, instance)})
    return ConsoleAnswers(FakeSyncDapr(state), workflows, LiveBatches(), LedgerStore()), state, workflows  # type: ignore[arg-type]


def test_purging_a_finished_batch_deletes_its_workflow_its_records_and_its_data_only():
    answers, state, workflows = answers_over(WorkflowStatus.COMPLETED)
    assert answers.purge({"batch_id": "b"}) == Purge(purged=True, known=True, status="completed")
    assert workflows.purged == [workflow_instance_id("b")]
    assert set(state.items) == {record_key("other")}
    assert answers.purge({"batch_id": "b"}) == Purge(purged=False, known=False)  # gone: nothing known of it


def test_a_batch_purged_by_retention_leaves_its_records_to_purge():
    answers, state, workflows = answers_over(None)
    assert answers.purge({"batch_id": "b"}) == Purge(purged=True, known=True, status="ended")
    assert workflows.purged == [] and record_key("b") not in state.items and outcome_key("b") not in state.items


@pytest.mark.parametrize("status,with_outcome", [(WorkflowStatus.RUNNING, False), (WorkflowStatus.PENDING, False),
                                                 (WorkflowStatus.TERMINATED, False)])
def test_a_batch_not_finished_is_refused_and_keeps_everything(status, with_outcome):
    answers, state, workflows = answers_over(status, with_outcome)
    before = dict(state.items)
    said = answers.purge({"batch_id": "b"})
    assert not said.purged and said.known and said.refused and said.status == status.name.lower()
    assert state.items == before and workflows.purged == []


@pytest.mark.parametrize("batch_id", ["a||b", "hx::1||actor", "\ud800", "x" * 10_000, "../state/x"])
def test_the_workflow_app_purges_nothing_named_by_what_is_not_a_batch_id(batch_id):
    class NoDapr:
        def __getattr__(self, name):
            raise AssertionError(f"{name} called for {batch_id!r}")

    answers = ConsoleAnswers(NoDapr(), NoDapr(), LiveBatches(), LedgerStore())  # type: ignore[arg-type]
    assert answers.purge({"batch_id": batch_id}) == Purge(purged=False, refused="not a batch id")


# --- the console -------------------------------------------------------------------------------------------


class PurgingWorkflow(FakeWorkflow):
    """The workflow app's purge as it answers: ``done`` finished, ``running`` not, nothing else known."""

    def __init__(self) -> None:
        super().__init__()
        self.purged: list[str] = []

    def purge(self, batch_id: str) -> Purge:
        if batch_id == "running":
            return Purge(purged=False, known=True, status="running", refused="the batch is running")
        if batch_id == "done" and "done" not in self.purged:
            self.purged.append(batch_id)
            return Purge(purged=True, known=True, status="completed")
        return Purge(purged=False, known=False)

    def batch(self, batch_id: str):  # noqa: ANN201 - the workflow app knows only the running batch
        known = super().batch(batch_id)
        return known if batch_id == "running" else known.model_copy(update={"status": None, "counts": None})


def test_an_operator_purges_a_finished_batch_and_the_console_forgets_it(monkeypatch):
    monkeypatch.setattr("tests.unit.test_console_doors.FakeWorkflow", PurgingWorkflow)
    client = new_console()
    assert client.get("/api/batches/done", headers=OPERATOR).status_code == 200
    answer = client.post("/batches/done/purge", headers=OPERATOR)
    assert answer.status_code == 200 and "purged" in answer.json()["message"]
    assert client.get("/api/batches/done", headers=OPERATOR).status_code == 404
    assert client.post("/batches/done/purge", headers=OPERATOR).status_code == 404  # once
    refused = client.post("/batches/running/purge", headers=OPERATOR)
    assert refused.status_code == 409 and "the batch is running" in refused.json()["error"]
    assert client.get("/api/batches/running", headers=OPERATOR).status_code == 200
    assert client.post("/batches/nobody/purge", headers=OPERATOR).status_code == 404
    for hostile in ("a%7C%7Cb", "a%3A%3Ab%7C%7Cc", "%ED%A0%80", "x" * 10_000):
        said = client.post(f"/batches/{hostile}/purge", headers=OPERATOR)
        assert said.status_code in (400, 404) and "batch" in said.json()["error"], (hostile[:20], said.text[:200])


def test_an_operators_page_of_a_finished_batch_has_a_purge_button_and_a_viewers_has_none(monkeypatch):
    monkeypatch.setattr("tests.unit.test_console_doors.FakeWorkflow", PurgingWorkflow)
    operator = new_console()
    sign_in(operator, "act")
    assert 'data-action="/batches/done/purge"' in operator.get("/batches/done").text
    assert "/purge" not in operator.get("/batches/running").text
    viewer = new_console()
    sign_in(viewer, "view")
    assert "/purge" not in viewer.get("/batches/done").text
    answer = operator.post("/batches/done/purge", headers={ACTION_HEADER: "1"})  # the button's request
    assert answer.status_code == 200 and answer.json()["location"] == "/"


def test_a_viewer_or_a_cookie_alone_purges_nothing(monkeypatch):
    monkeypatch.setattr("tests.unit.test_console_doors.FakeWorkflow", PurgingWorkflow)
    client = new_console()
    assert client.post("/batches/done/purge", headers=VIEWER).status_code == 403
    sign_in(client, "act")
    assert client.post("/batches/done/purge").status_code == 403  # not from the console's own page
    assert client.post("/batches/done/purge", headers={ACTION_HEADER: "1", "origin": "http://evil.example"}
                       ).status_code == 403
    assert client.get("/api/batches/done").status_code == 200


def test_a_forgotten_batch_leaves_the_store_and_is_not_read_back():
    book = new_book()
    for batch_id in ("keep", "gone"):
        book.accepted(batch(batch_id, 2))
        book.finished(outcome(batch_id, ["completed", "failed"]))
    book.flush()
    assert detail_key("tasks", "gone") in store_of(book).items
    assert book.forget("gone") and not book.forget("gone") and book.get("gone") is None
    book.flush()
    assert not [key for key in store_of(book).items if "gone" in key]
    assert not any(b"gone" in value for value in store_of(book).items.values())
    again = new_book(store_of(book))
    assert again.load() == 1 and again.get("gone") is None and again.get("keep") is not None
    assert HEAD_KEY in store_of(book).items
