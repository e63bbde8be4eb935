"""The run folder is its user's only (src/taskfan/stack/private_files.py): folders 0700, files without group or
other bits, whatever the umask of whoever made them."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from taskfan import runfile
from taskfan.settings import Settings
from taskfan.stack import Stack, logkeeper, private_files
from taskfan.stack.processes import StackState

from .test_runfile_and_topology import RUN_FILE


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_run_folder_from_before_is_mended_and_links_are_not_followed(tmp_path):
    run = tmp_path / "run"
    (run / "redis" / "appendonlydir").mkdir(parents=True, mode=0o755)
    (run / "redis").chmod(0o755)
    aof = run / "redis" / "appendonlydir" / "appendonly.aof.1.incr.aof"
    aof.write_text("SET task ...")
    aof.chmod(0o644)
    tool = run / "tool.sh"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    outside = tmp_path / "outside.txt"
    outside.write_text("not the stack's")
    outside.chmod(0o644)
    (run / "link").symlink_to(outside)
    cluster = run / "k8s"
    cluster.mkdir(mode=0o755)
    cluster.chmod(0o755)
    image_tree = run / "images" / "work" / "app-1" / "site.py"  # read by an image's non-root user
    image_tree.parent.mkdir(parents=True)
    image_tree.write_text("")
    image_tree.chmod(0o644)

    changed, not_ours = private_files.make_private(run)

    assert not_ours == []
    assert {p.name for p in changed} == {"run", "redis", "appendonlydir", "appendonly.aof.1.incr.aof", "tool.sh"}
    assert (mode(run), mode(run / "redis"), mode(aof), mode(tool)) == (0o700, 0o700, 0o600, 0o700)
    assert mode(outside) == 0o644  # a link's target is not the run folder's
    assert mode(cluster) == 0o755  # the cluster's state keeps its own modes
    assert mode(image_tree) == 0o644  # so do the images' trees: make test packed them unreadable once
    assert private_files.exposed(run) == []
    assert private_files.make_private(run) == ([], [])  # nothing left to change


def test_exposed_names_every_path_with_a_group_or_other_bit(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs").chmod(0o750)
    (tmp_path / "logs" / "redis.log").write_text("")
    (tmp_path / "logs" / "redis.log").chmod(0o604)
    tmp_path.chmod(0o700)
    assert private_files.exposed(tmp_path) == [(str(tmp_path / "logs"), "drwxr-x---"),
                                               (str(tmp_path / "logs" / "redis.log"), "-rw----r--")]


def test_files_made_under_the_private_umask_are_owner_only_and_the_umask_comes_back(tmp_path):
    before = os.umask(0o022)
    try:
        with private_files.private_umask():
            (tmp_path / "made").mkdir()
            (tmp_path / "made" / "file").write_text("x")
        assert os.umask(0o022) == 0o022  # restored
    finally:
        os.umask(before)
    assert (mode(tmp_path / "made"), mode(tmp_path / "made" / "file")) == (0o700, 0o600)


def test_stack_json_and_a_rotated_log_are_owner_only_whatever_the_umask(tmp_path):
    before = os.umask(0o022)
    try:
        StackState().save(tmp_path / "stack.json")
        (tmp_path / "scorer-0.log").write_bytes(b"x" * 200)
        logkeeper.sweep(tmp_path, max_bytes=100, keep=2)
    finally:
        os.umask(before)
    assert mode(tmp_path / "stack.json") == 0o600
    assert mode(tmp_path / "scorer-0.log.1") == 0o600


def test_every_process_the_launcher_starts_runs_with_the_private_umask_and_logs_owner_only(tmp_path):
    stack = Stack(Settings(run_dir=str(tmp_path / "run")), runfile.load(RUN_FILE))
    stack.logs_dir.mkdir(parents=True)
    state = StackState()
    before = os.umask(0o022)
    try:
        # As "redis": the one process started without the stack's secrets in its environment.
        process = stack.spawn(state, "redis", [sys.executable, "-c",
                                               "import os; open('made', 'w').close(); print(oct(os.umask(0)))"])
    finally:
        os.umask(before)
    assert os.waitpid(process.pid, 0)[1] == 0
    assert (stack.logs_dir / "redis.log").read_text().strip() == "0o77"
    assert mode(stack.logs_dir / "redis.log") == 0o600
    assert mode(stack.run_dir / "made") == 0o600  # a file the process made itself
    assert mode(stack.state_path) == 0o600


def test_the_install_scripts_logs_are_owner_only_and_their_umask_is_left_alone(tmp_path):
    lib = Path(__file__).resolve().parents[2] / "deploy" / "lib.sh"
    log = tmp_path / "logs" / "install.log"
    out = subprocess.run(["bash", "-c", f'umask 022; source "{lib}"; phase "a step" echo done; umask'],
                         env={**os.environ, "TASKFAN_LOG": str(log)}, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0022"  # what the scripts build stays readable by others (the images' user)
    assert (mode(log.parent), mode(log)) == (0o700, 0o600)
    assert "done" in log.read_text()


def test_another_users_file_inside_is_left_and_named_but_another_users_run_folder_stops_the_start(tmp_path,
                                                                                                 monkeypatch):
    run = tmp_path / "run"
    (run / "grants").mkdir(parents=True)
    run.chmod(0o755)
    (run / "grants").chmod(0o755)
    chmod = os.chmod
    theirs = {run / "grants"}

    def as_another_user(path, mode, **kwargs):
        if Path(path) in theirs:
            raise PermissionError(1, "Operation not permitted")
        chmod(path, mode, **kwargs)

    monkeypatch.setattr(private_files.os, "chmod", as_another_user)
    assert private_files.make_private(run) == ([run], [run / "grants"])
    run.chmod(0o755)
    theirs.add(run)
    with pytest.raises(private_files.NotPrivate, match="is not this user's"):
        private_files.make_private(run)
