"""Ingest's capacity rules (services/ingest/capacity.py): when a batch is refused for a full stack."""

from services.ingest.capacity import Backlog, Reading, refusal

MiB = 2**20


def test_a_batch_is_refused_at_80_percent_of_the_memory_ceiling_and_not_before():
    assert refusal(Reading(int(799.9 * MiB), 1000 * MiB, ()), 100) is None
    full = refusal(Reading(800 * MiB, 1000 * MiB, ()), 100)
    assert full is not None and "800 MiB of its 1,000 MiB ceiling" in full and "REDIS_MAXMEMORY" in full


def test_no_ceiling_no_memory_refusal():
    assert refusal(Reading(10**12, 0, ()), 100) is None


def test_the_group_furthest_behind_is_named_with_how_to_remove_it():
    backlogs = (Backlog("tasks", "workflow", 3), Backlog("outcomes", "my-subscriber", 80),
                Backlog("outcomes", "console", 0))
    full = refusal(Reading(0, 0, backlogs), 100)
    assert full is not None and "'my-subscriber' has 80 events of 'outcomes'" in full
    assert "XGROUP DESTROY outcomes my-subscriber" in full
    assert refusal(Reading(0, 0, backlogs[:1] + backlogs[2:]), 100) is None
    assert refusal(Reading(0, 0, (Backlog("tasks", "workflow", 79),)), 100) is None
