"""The local stack's log rotation (src/taskfan/stack/logkeeper.py)."""

from taskfan.stack import logkeeper


def test_a_log_over_the_limit_is_copied_and_emptied_and_its_writer_goes_on_at_its_start(tmp_path):
    path = tmp_path / "workflow.log"
    with open(path, "ab", buffering=0) as writer:  # as the launcher opens a process's log
        writer.write(b"first\n" * 100)
        assert logkeeper.sweep(tmp_path, max_bytes=500, keep=3) == ["workflow.log"]
        writer.write(b"after\n")
    assert path.read_bytes() == b"after\n"  # appended at the new end: no hole where the old text was
    assert (tmp_path / "workflow.log.1").read_bytes() == b"first\n" * 100


def test_at_most_keep_old_copies_and_the_newest_is_dot_1(tmp_path):
    path = tmp_path / "scorer-0.log"
    for round_ in range(5):
        path.write_bytes(f"round {round_}\n".encode() * 100)
        logkeeper.sweep(tmp_path, max_bytes=100, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scorer-0.log", "scorer-0.log.1", "scorer-0.log.2"]
    assert (tmp_path / "scorer-0.log.1").read_bytes().startswith(b"round 4")
    assert (tmp_path / "scorer-0.log.2").read_bytes().startswith(b"round 3")


def test_a_log_under_the_limit_is_left_alone(tmp_path):
    (tmp_path / "redis.log").write_bytes(b"x" * 100)
    assert logkeeper.sweep(tmp_path, max_bytes=100, keep=3) == []
    assert [p.name for p in tmp_path.iterdir()] == ["redis.log"]
