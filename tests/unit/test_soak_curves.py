"""The long soak's trend check (bench/soak_curves.py)."""

from bench.soak_curves import problems, trends


def samples(curve, every_s=300, minutes=60):
    return [{"t_s": t, "tasks_per_s": 10.0, "p50_s": 0.2, "p95_s": 1.0, "rss_total_kib": 1000, "log_bytes": 5,
             "redis_used_memory": curve(t), "scheduler_db_in_use": 100, "scheduler_db_bytes": 100,
             "stream_entries": 50} for t in range(0, minutes * 60 + 1, every_s)]


def test_a_flat_stack_passes_and_the_warm_up_does_not_count():
    found = trends(samples(lambda t: 1000 if t >= 600 else t))  # grows only in the first 10 minutes
    assert found["redis_used_memory"] == 0 and problems(found) == []


def test_memory_growing_more_than_a_tenth_per_half_hour_fails_and_is_named():
    found = trends(samples(lambda t: 1000 + t))  # +1,800 per half hour on a mean of ~3,100
    assert 0.5 < found["redis_used_memory"] < 0.7
    assert problems(found) == [f"redis_used_memory rose {found['redis_used_memory']:+.0%} per half hour after "
                               "the warm-up (limit +10%)"]


def test_one_sample_taken_during_a_fault_is_not_a_trend_but_a_steady_rise_is():
    spiked = samples(lambda t: 1000)
    spiked[-1]["p95_s"] = 16.0  # the last five minutes held a Redis restart
    assert problems(trends(spiked)) == []
    rising = samples(lambda t: 1000)
    for s in rising:
        s["p95_s"] = 1.0 + s["t_s"] / 3600
    assert any("p95_s rose" in p for p in problems(trends(rising)))


def test_throughput_falling_fails_rising_does_not():
    falling = samples(lambda t: 1000)
    for s in falling:
        s["tasks_per_s"] = 10 - s["t_s"] / 600
    assert any("tasks_per_s fell" in p for p in problems(trends(falling)))
    rising = samples(lambda t: 1000)
    for s in rising:
        s["tasks_per_s"] = 10 + s["t_s"] / 600
    assert problems(trends(rising)) == []


def test_too_few_samples_after_the_warm_up_are_no_verdict():
    assert trends(samples(lambda t: t, minutes=15))["redis_used_memory"] is None


def test_logs_are_held_to_their_cap_not_to_a_trend():
    from bench.soak_curves import log_problems

    growing = [{"t_s": t, "log_bytes_by_process": {"workflow": t * 100, "redis": 10}} for t in range(0, 3601, 300)]
    assert "log_bytes" not in trends(growing)  # growing below the cap is what logs do until rotation
    assert log_problems(growing, max_bytes=10**6, files=3) == []
    assert log_problems(growing, max_bytes=10**4, files=1) == [
        "the logs of workflow reached 360,000 bytes, over their cap of 40,000 (LOG_MAX_BYTES, LOG_FILES)"]
