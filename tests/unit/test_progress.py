"""The terminal progress of `publish --wait` and `status --watch`: a bar on a TTY, plain lines piped."""

import io

from taskfan.cli.progress import Progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def running(done, total=1000, **counts):
    return {"state": "RUNNING", "done": done, "total": total, **counts}


def test_on_a_terminal_the_bar_is_redrawn_in_place_with_rate_and_time_left():
    out, clock = io.StringIO(), Clock()
    progress = Progress(out, clock, tty=True)
    progress.update(running(0))
    clock.now = 2.0
    progress.update(running(200, completed=190, rejected=10))
    progress.close()
    frames = out.getvalue().split("\r\x1b[2K")[1:]
    assert len(frames) == 2 and "\n" not in frames[0]
    last = frames[1].rstrip("\n")
    assert last.startswith("[######........................]  20%  RUNNING: 200/1000 tasks")
    assert "190 completed, 10 rejected" in last
    assert "100 tasks/s" in last and "8s left" in last
    assert out.getvalue().endswith("\n")  # the prompt comes back on a line of its own


def test_piped_it_writes_plain_lines_only_when_something_changed_and_not_too_often():
    out, clock = io.StringIO(), Clock()
    progress = Progress(out, clock, tty=False)
    progress.update({"state": "QUEUED", "done": 0, "total": 1000, "position": 2})
    progress.update({"state": "QUEUED", "done": 0, "total": 1000, "position": 2})
    clock.now = 0.5
    progress.update(running(0))
    for second in range(1, 8):
        clock.now = 0.5 + second * 0.5
        progress.update(running(second * 50))
    clock.now = 10
    progress.update({"state": "COMPLETED", "done": 1000, "total": 1000, "completed": 1000})
    progress.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "QUEUED at position 2: 0/1000 tasks, waiting for admission"
    assert lines[1] == "RUNNING: 0/1000 tasks"
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    assert len(lines) == 4  # queued, running, one update two seconds later, completed
    assert lines[2].startswith("RUNNING: 200/1000 tasks") and "tasks/s" in lines[2]
    assert lines[3] == "COMPLETED: 1000/1000 tasks  1000 completed"


def test_the_rate_is_over_the_last_seconds_not_since_the_start():
    out, clock = io.StringIO(), Clock()
    progress = Progress(out, clock, tty=True)
    for second in range(30):  # 10 tasks/s for 20 s, then 100 tasks/s
        clock.now = float(second)
        progress.update(running(10 * second if second <= 20 else 200 + 100 * (second - 20), total=100_000))
    assert 85 <= progress.rate() <= 100  # since the start it would be 38
