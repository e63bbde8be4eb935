"""The services' collector tuning (taskfan.dapr_app.collect_less): startup's objects frozen, fewer collections."""

import gc

from taskfan.dapr_app import GC_YOUNG_OBJECTS, collect_less


def test_a_served_app_freezes_its_startup_objects_and_collects_after_many_new_ones() -> None:
    before = gc.get_threshold()
    try:
        collect_less()
        assert gc.get_freeze_count() > 1000  # the modules and schemas loaded so far
        assert gc.get_threshold()[0] == GC_YOUNG_OBJECTS
        cycle: list[object] = []
        cycle.append(cycle)  # still collected: the collector runs, only less often
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
