"""`make soak`: the real stack under a steady load and random faults; a ledger of every batch at the end.

Starts its own stack (2 scorers) on dapr.yaml's ports shifted by --port-offset, with its own Redis, so it
never meets a stack started by `make up` or the end-to-end tests. For --seconds it publishes a batch
every --interval seconds, rotating through the four documented ways (ingest POST /batches, `taskfan
publish`, Dapr's publish API on the ingest sidecar, a raw XADD on the `tasks` stream); a way that is down
because of a fault is retried until it accepts. Every --fault-interval seconds (with jitter) it injects
one fault chosen at random: SIGKILL of any process of the stack, then a restart the way `taskfan stack
restart` does it, SIGSTOP of a step app for a few seconds, then SIGCONT, or a fault point of the workflow
app (services/workflow/faults.py: it is held at the point, e.g. after the outcome's publish and before its
record, and SIGKILLed there). Every --hostile-every batches it also puts a hostile event (bench/hostile.py:
deep nesting, huge numbers, lone surrogates, invalid UTF-8, wrong types, past the size limit) on the `tasks`
stream, which must get exactly one dead letter. Outcomes and dead letters are
read straight from their Redis streams. After the publishing period it waits (bounded) for the missing
outcomes, prints the ledger, writes it as JSON (--output) and stops the stack, also on Ctrl-C or failure.

Exit status: 0 when every accepted batch has exactly one outcome (a repeat of the same event, same id and
content, is a redelivery the contract allows), tasks in = tasks in outcomes, each outcome lists its batch's
tasks with the results the rules give (or `failed` while a fault was active), every hostile event got
exactly one dead letter and every other dead letter came while a fault was active, every batch was
accepted and every fault was recovered from; 1 otherwise; 2 when the stack could not be started; 130 when
interrupted.

    python -m bench.soak                    # 10 minutes, writes bench/results/soak.json
    python -m bench.soak --seconds 90 --output /tmp/soak.json
    python -m bench.soak --long             # `make soak-long`: 1 hour, its curves (bench/soak_curves.py)

--long samples the stack every --sample-every seconds and fails as well when a curve trends the wrong way
after the first 10 minutes (bench/soak_curves.py); it writes bench/results/soak-long.json and .png. So that
one hour shows the steady state, its stack keeps what expires on a shorter clock: acknowledged events
5 minutes (STREAM_RETENTION_S), batch and outcome records 5 minutes (RECORD_TTL_S), logs rotated at
1 MiB (LOG_MAX_BYTES), the console's history 200 batches and 1 MiB of their details (CONSOLE_HISTORY,
CONSOLE_DETAIL_BYTES); the defaults reach the same state later, at a size the README gives.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import redis
import yaml

from bench import hostile as hostile_events
from bench import soak_curves
from bench.soak_ledger import (
    WAYS,
    Fault,
    HostileEvent,
    Published,
    Received,
    build_ledger,
    iso,
    make_batch,
    problems,
    render,
)
from services.workflow import faults as fault_points
from taskfan import runfile, stack_secrets
from taskfan.contracts import DEADLETTER_TOPIC, OUTCOMES_TOPIC, TASK_BATCH_EVENT_TYPE, TASKS_TOPIC, AppId
from taskfan.settings import Settings
from taskfan.stack import Stack, StackError, StackState, port_open, port_owner, restart
from taskfan.stack.topology import Topology
from taskfan.versions import DAPR_VERSION

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO_ROOT / "bench" / "results" / "soak.json"
LONG_OUTPUT = REPO_ROOT / "bench" / "results" / "soak-long.json"
# What --long shortens, so that an hour reaches the steady state (see the module's text).
LONG_CLOCKS = {"STREAM_RETENTION_S": "300", "RECORD_TTL_S": "300", "LOG_MAX_BYTES": str(2**20),
               "CONSOLE_HISTORY": "200", "CONSOLE_DETAIL_BYTES": str(2**20)}
DEFAULT_PORT_OFFSET = 10_000
SCORERS = 2
STEP_APPS = ("validator", "enricher", "scorer")
PROGRESS_EVERY_S = 10.0

_T0 = time.monotonic()


def say(message: str) -> None:
    elapsed = int(time.monotonic() - _T0)
    print(f"soak {elapsed // 60:02d}:{elapsed % 60:02d} | {message}", file=sys.stderr, flush=True)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


# --- the stack on its own ports --------------------------------------------------------------------


def shift_run_file(document: dict[str, Any], offset: int, root: Path, ingest_port: int) -> dict[str, Any]:
    """A copy of a dapr.yaml document with every port moved by ``offset`` and every path made absolute.

    Shifted: each app's app port and sidecar HTTP/gRPC/internal gRPC ports, every ``*_PORT`` in the
    environment (the ingest API's ``INGEST_PORT``, set explicitly from ``ingest_port``), and the placement
    and scheduler addresses (the launcher puts their side ports at +1..+3, so those move with them).
    Scorer replica i adds i to the scorer's ports, so the replicas move too.
    """
    doc = json.loads(json.dumps(document))  # a deep copy
    common = doc["common"]
    common["resourcesPaths"] = [str(root / p) for p in common["resourcesPaths"]]
    common["configFilePath"] = str(root / common["configFilePath"])
    for key in ("placementHostAddress", "schedulerHostAddress"):
        host, port = common[key].rsplit(":", 1)
        common[key] = f"{host}:{int(port) + offset}"
    common["env"] = _shift_env(common.get("env") or {}, offset)
    for app in doc["apps"]:
        app["appDirPath"] = str(root / app["appDirPath"])
        for key in ("appPort", "daprHTTPPort", "daprGRPCPort", "daprInternalGRPCPort"):
            if app.get(key):
                app[key] = int(app[key]) + offset
        app["env"] = _shift_env(app.get("env") or {}, offset)
        if app["appID"] == "ingest":
            app["env"]["INGEST_PORT"] = str(ingest_port + offset)
    return doc


def _shift_env(env: dict[str, str], offset: int) -> dict[str, str]:
    return {k: str(int(v) + offset) if k.endswith("_PORT") and str(v).isdigit() else v for k, v in env.items()}


def stack_ports(topology: Topology, scorers: int, redis_port: int) -> dict[int, str]:
    """Every port a stack of this topology listens on, with the process it belongs to."""
    ports = {p: "placement" for p in topology.placement_ports}
    ports.update({p: "scheduler" for p in topology.scheduler_ports})
    ports[topology.ingest_port] = "ingest API"
    ports[redis_port] = "redis"
    for instance in topology.instances(scorers):
        ports.update({p: f"{instance.label}-daprd" for p in instance.ports})
        if instance.app_port:
            ports[instance.app_port] = instance.label
    return ports


def prepare_stack(run_dir: Path, offset: int, long: bool = False) -> Stack:
    """A fresh run directory with the shifted run file; the stack that runs from it (not started yet)."""
    source = REPO_ROOT / runfile.RUN_FILE_NAME
    state = StackState.load(run_dir / "stack.json")
    if state and any(p.alive() for p in state.processes):
        raise StackError(f"a soak stack is still running from {run_dir}; stop it with "
                         f"`RUN_DIR={run_dir} TASKFAN_RUN_FILE={run_dir / runfile.RUN_FILE_NAME} "
                         f"REDIS_PORT={Settings.redis_port + offset} .venv/bin/taskfan stack down`")
    default = runfile.load(source)
    redis_port = Settings.redis_port + offset
    shifted_doc = shift_run_file(yaml.safe_load(source.read_text()), offset, REPO_ROOT, default.ingest_port())
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    path = run_dir / runfile.RUN_FILE_NAME
    path.write_text("# Written by bench/soak.py: dapr.yaml with every port shifted by "
                    f"{offset}.\n" + yaml.safe_dump(shifted_doc, sort_keys=False, allow_unicode=True))
    shifted = runfile.load(path)
    ours = stack_ports(Topology(shifted), SCORERS, redis_port)
    unshifted = sorted(set(ours) & set(stack_ports(Topology(default), SCORERS, Settings.redis_port)))
    if unshifted:  # a port key this module does not know yet: refuse rather than meet the default stack
        raise StackError(f"the shifted run file still uses default ports {unshifted}: "
                         "teach bench/soak.py to shift them")
    busy = [f"{p} ({ours[p]}; held by {port_owner(p) or 'an unknown process'})" for p in sorted(ours) if port_open(p)]
    if busy:
        raise StackError(f"ports already in use: {', '.join(busy)}; the soak uses dapr.yaml's ports + {offset} "
                         "(--port-offset) and never shares a Redis or a stack it did not start")
    # The apps, the launcher's own Settings and the `taskfan publish` subprocesses all read these.
    # No tracing: its Jaeger would take the default stack's ports, and the soak's figures are about faults.
    (run_dir / "fault-points").mkdir()
    os.environ.update({**(LONG_CLOCKS if long else {}), "REDIS_PORT": str(redis_port), "RUN_DIR": str(run_dir),
                       runfile.RUN_FILE_ENV: str(path), "TRACE_SAMPLING": "0",
                       "FAULT_POINTS_DIR": str(run_dir / "fault-points")})
    stack = Stack(Settings.from_env(), shifted)
    # Installed once here: a restart then kills at once instead of re-running the install check first
    # (seconds on a loaded machine), so a fault's recorded start is when its signal was sent.
    bin_dir = stack.dapr_bin()
    stack.dapr_bin = lambda: bin_dir  # type: ignore[method-assign]
    return stack


def code_version() -> dict[str, Any]:
    """The commit the stack's code comes from, and the files of the stack that differ from it."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
        return done.stdout.rstrip() if done.returncode == 0 else ""
    changed = git("status", "--porcelain", "--", "src", "services", "components", "deploy", "dapr.yaml")
    return {"commit": git("rev-parse", "HEAD") or None, "uncommitted": [line[3:] for line in changed.splitlines()]}


def stack_settings(settings: Settings) -> dict[str, Any]:
    """The settings that shape the soak's stack, as its processes got them from the environment."""
    names = ("step_timeout_s", "max_tasks_in_progress", "max_in_flight", "score_delay_ms", "scorer_concurrency",
             "scorer_fail_tasks")
    return {name: getattr(settings, name) for name in names if hasattr(settings, name)}


def rss(stack: Stack) -> dict[str, dict[str, int | None]]:
    """VmRSS (KiB) of every process of the stack, by name, from /proc."""
    state = StackState.load(stack.state_path)
    result: dict[str, dict[str, int | None]] = {}
    for process in state.processes if state else []:
        kib = None
        if process.alive():
            try:
                for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        kib = int(line.split()[1])
            except OSError:
                pass
        result[process.name] = {"pid": process.pid, "rss_kib": kib}
    return result


def log_errors(stack: Stack) -> dict[str, dict[str, Any]]:
    """Per process log: how many error records, and the first few distinct messages."""
    summary: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(stack.logs_dir).glob("*.log")):
        count, messages = 0, []
        for line in path.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if str(record.get("level", "")).lower() in ("error", "fatal", "critical"):
                count += 1
                message = str(record.get("msg", ""))[:200]
                if message not in messages and len(messages) < 3:
                    messages.append(message)
        if count:
            summary[path.stem] = {"errors": count, "first": messages}
    return summary


# --- publishing, four ways -------------------------------------------------------------------------


class Publisher:
    """Publishes one batch per interval through the ways in turn; each is retried until accepted."""

    ATTEMPT_TIMEOUT_S = 30.0

    def __init__(self, stack: Stack, rng: random.Random, args: argparse.Namespace, abort: threading.Event) -> None:
        self.stack, self.rng, self.args, self.abort = stack, rng, args, abort
        self.published: list[Published] = []
        self.hostile: list[HostileEvent] = []
        self.lock = threading.Lock()
        self.redis = redis.Redis(host=stack.settings.redis_host, port=stack.settings.redis_port,
                                 password=stack.secrets.redis_password, socket_timeout=self.ATTEMPT_TIMEOUT_S)
        self.ingest_auth = stack_secrets.ingest_headers(stack.secrets.ingest_token)
        self.dapr_auth = stack_secrets.dapr_headers(stack.secrets.sidecar_token(AppId.INGEST))
        self.batch_dir = stack.run_dir / "batches"
        self.batch_dir.mkdir(parents=True, exist_ok=True)
        self.pool = ThreadPoolExecutor(max_workers=6, thread_name_prefix="publish")
        self.run_tag = uuid.uuid4().hex[:6]
        cli = Path(sys.executable).with_name("taskfan")
        self.cli = [str(cli)] if cli.exists() else [sys.executable, "-m", "taskfan.cli"]
        # The CLI finds the soak stack's addresses and token here (in its environment, not on its command line).
        self.cli_env = {**os.environ, "INGEST_URL": stack.ingest_url, "INGEST_TOKEN": stack.secrets.ingest_token,
                        "WORKFLOW_DAPR_URL": stack.run_file.dapr_http_url("workflow")}

    def run(self, until: float) -> None:
        """Submit batches on a fixed schedule until the monotonic time ``until``."""
        number, next_at = 0, time.monotonic()
        while not self.abort.is_set() and next_at < until:
            way = WAYS[number % len(WAYS)]
            batch = make_batch(self.rng, f"soak-{self.run_tag}-{number:05d}-{way}", self.args.min_tasks,
                               self.args.max_tasks)
            record = Published(batch["batch_id"], way, batch["tasks"], started_at=time.time())
            with self.lock:
                self.published.append(record)
            self.pool.submit(self._publish, record, batch)
            if self.args.hostile_every and number % self.args.hostile_every == self.args.hostile_every - 1:
                self.pool.submit(self._hostile, number)
            number += 1
            next_at += self.args.interval
            self.abort.wait(max(0.0, next_at - time.monotonic()))

    def finish(self) -> None:
        """Wait for the publishes still retrying (each is bounded by --publish-timeout)."""
        self.pool.shutdown(wait=True, cancel_futures=self.abort.is_set())

    def _hostile(self, number: int) -> None:
        """One hostile event on the stream, as a raw client would put it there (retried while Redis restarts)."""
        kind = self.rng.choice(list(hostile_events.EVENTS))
        event = HostileEvent(f"hostile-{self.run_tag}-{number:05d}", kind, sent_at=time.time())
        deadline = time.monotonic() + self.args.publish_timeout
        while not self.abort.is_set() and time.monotonic() < deadline:
            try:
                self.redis.xadd(TASKS_TOPIC, {"data": hostile_events.EVENTS[kind](event.marker)})
            except redis.RedisError:
                self.abort.wait(0.5)
                continue
            with self.lock:
                self.hostile.append(event)
            return

    def _publish(self, record: Published, batch: dict[str, Any]) -> None:
        deadline = time.monotonic() + self.args.publish_timeout
        delay = 0.25
        while not self.abort.is_set():
            record.attempts += 1
            try:
                verdict, detail = getattr(self, f"_via_{record.way}")(batch)
            except (redis.AuthenticationError, redis.exceptions.AuthorizationError) as exc:
                verdict, detail = "refused", one_line(exc)  # a wrong password does not pass with time
            except Exception as exc:  # noqa: BLE001 - any other failure of a way is a reason to try again
                verdict, detail = "retry", one_line(exc)
            if verdict == "accepted":
                record.accepted_at = time.time()
                return
            if len(record.errors) < 5:
                record.errors.append(f"attempt {record.attempts}: {detail}")
            if verdict == "refused" or time.monotonic() > deadline:
                say(f"batch {record.batch_id} not accepted by {record.way}: {detail}")
                return
            self.abort.wait(delay)
            delay = min(delay * 2, 2.0)

    def _via_http(self, batch: dict[str, Any]) -> tuple[str, str]:
        response = httpx.post(f"{self.stack.ingest_url}/batches", json=batch, timeout=self.ATTEMPT_TIMEOUT_S,
                              headers=self.ingest_auth)
        return _verdict(response.status_code, 202, response.text)

    def _via_cli(self, batch: dict[str, Any]) -> tuple[str, str]:
        path = self.batch_dir / f"{batch['batch_id']}.json"
        path.write_text(json.dumps({"tasks": batch["tasks"]}, ensure_ascii=False))
        done = subprocess.run([*self.cli, "publish", str(path), "--batch-id", batch["batch_id"]], env=self.cli_env,
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=self.ATTEMPT_TIMEOUT_S * 2)
        detail = f"exit {done.returncode}: {done.stderr.strip()[-300:]}"
        if done.returncode == 0:
            return "accepted", ""
        # Exit 2 is a refused batch (4xx) or a bad file; 1 (5xx) and 3 (unreachable) can pass.
        return ("refused" if done.returncode == 2 else "retry"), detail

    def _via_dapr(self, batch: dict[str, Any]) -> tuple[str, str]:
        url = f"{self.stack.run_file.dapr_http_url('ingest')}/v1.0/publish/pubsub/{TASKS_TOPIC}"
        response = httpx.post(url, content=json.dumps(batch, ensure_ascii=False).encode(),
                              headers={"content-type": "application/json", **self.dapr_auth},
                              timeout=self.ATTEMPT_TIMEOUT_S)
        return _verdict(response.status_code, 204, response.text)

    def _via_redis(self, batch: dict[str, Any]) -> tuple[str, str]:
        event = {"specversion": "1.0", "type": TASK_BATCH_EVENT_TYPE, "source": "taskfan-soak",
                 "id": str(uuid.uuid4()), "datacontenttype": "application/json", "data": batch}
        self.redis.xadd(TASKS_TOPIC, {"data": json.dumps(event, ensure_ascii=False)})
        return "accepted", ""


def _verdict(status: int, accepted: int, text: str) -> tuple[str, str]:
    if status == accepted:
        return "accepted", ""
    # 4xx is a refusal of this batch (a 409 would be a broken one-id-one-payload promise); 5xx can pass.
    return ("refused" if 400 <= status < 500 else "retry"), f"{status} {text.strip()[:300]}"


# --- outcomes and dead letters, straight from Redis -------------------------------------------------


class Collector(threading.Thread):
    """Follows the ``outcomes`` and ``tasks-deadletter`` streams; reconnects while Redis restarts."""

    def __init__(self, settings: Settings, redis_password: str) -> None:
        super().__init__(name="collector", daemon=True)
        self.settings = settings
        self.redis_password = redis_password
        self.received: dict[str, list[Received]] = {}
        self.dead_letters: list[dict[str, Any]] = []
        self.unreadable: list[str] = []
        self.lock = threading.Lock()
        self.halt = threading.Event()
        self.last = {OUTCOMES_TOPIC: "0-0", DEADLETTER_TOPIC: "0-0"}

    def run(self) -> None:
        client: redis.Redis | None = None
        while not self.halt.is_set():
            try:
                client = client or redis.Redis(host=self.settings.redis_host, port=self.settings.redis_port,
                                               password=self.redis_password, socket_timeout=10)
                for stream, entries in client.xread(self.last, block=1000, count=500) or []:
                    for entry_id, fields in entries:
                        self._take(stream.decode(), entry_id.decode(), fields)
                        self.last[stream.decode()] = entry_id.decode()
            except redis.RedisError:
                client = None
                self.halt.wait(0.5)

    def _take(self, stream: str, entry_id: str, fields: dict[bytes, bytes]) -> None:
        try:
            event = json.loads(fields[b"data"])
            data = event["data"]
        except (KeyError, TypeError, ValueError):
            self.unreadable.append(f"{stream} {entry_id}")
            return
        with self.lock:
            if stream == OUTCOMES_TOPIC:
                self.received.setdefault(data.get("batch_id"), []).append(
                    Received(data, entry_id, time.time(), event_id=event.get("id")))
            else:
                self.dead_letters.append(data)

    def outcome_count(self) -> int:
        with self.lock:
            return sum(len(v) for v in self.received.values())

    def has_outcome(self, batch_id: str) -> bool:
        with self.lock:
            return bool(self.received.get(batch_id))


# --- faults ----------------------------------------------------------------------------------------


class FaultInjector(threading.Thread):
    """Every ~interval seconds one fault at random: SIGKILL + restart of any process, or SIGSTOP/SIGCONT
    of a step app. One at a time: the next waits until the stack has recovered from the last."""

    def __init__(self, stack: Stack, rng: random.Random, args: argparse.Namespace, end: threading.Event,
                 abort: threading.Event) -> None:
        super().__init__(name="faults", daemon=True)
        self.stack, self.rng, self.args, self.end, self.abort = stack, rng, args, end, abort
        self.faults: list[Fault] = []
        state = StackState.load(stack.state_path)
        names = [p.name for p in state.processes] if state else []
        self.options = [("SIGKILL", n) for n in names]
        self.options += [("SIGSTOP", n) for n in names if n.split("-")[0] in STEP_APPS and not n.endswith("-daprd")]
        # The points a batch passes on its own (a terminate is the console's or an operator's, not the soak's).
        self.options += [("FAULT_POINT", point) for point in (fault_points.AFTER_LEDGER_WRITE,
                                                              fault_points.AFTER_PUBLISH, fault_points.AFTER_RECORD)]
        if args.fault_targets:  # e.g. "redis" or "SIGSTOP": to reproduce one kind of fault
            wanted = set(args.fault_targets.split(","))
            chosen = [o for o in self.options if wanted & {o[0], o[1]}]
            if not chosen:
                raise StackError(f"--fault-targets {args.fault_targets!r} matches no process or signal; "
                                 f"choose from {sorted({*names, 'SIGKILL', 'SIGSTOP'})}")
            self.options = chosen

    def run(self) -> None:
        while True:
            delay = self.args.fault_interval + self.rng.uniform(-self.args.fault_jitter, self.args.fault_jitter)
            if self.end.wait(max(1.0, delay)):
                return
            kind, name = self.rng.choice(self.options)
            fault = Fault(len(self.faults) + 1, kind, name, started_at=time.time())
            self.faults.append(fault)
            try:
                if kind == "SIGKILL":
                    say(f"fault #{fault.number}: SIGKILL {name}, then restart")
                    restart(self.stack, name)
                elif kind == "FAULT_POINT":
                    say(f"fault #{fault.number}: the workflow app held at {name}, then SIGKILL and restart")
                    fault.reached = self._at_point(name)
                else:
                    fault.hold_s = round(self.rng.uniform(self.args.freeze_min, self.args.freeze_max), 1)
                    say(f"fault #{fault.number}: SIGSTOP {name} for {fault.hold_s} s")
                    self._freeze(name, fault.hold_s)
            except Exception as exc:  # noqa: BLE001 - recorded in the ledger; the soak carries on
                fault.error = one_line(exc)
            fault.ended_at = time.time()
            outcome = f"failed: {fault.error}" if fault.error else (
                "SIGCONT sent" if kind == "SIGSTOP" else "restarted and ready")
            say(f"fault #{fault.number}: {kind} {name} {outcome} after {fault.ended_at - fault.started_at:.1f} s")

    def _at_point(self, point: str) -> bool:
        """Arm ``point``; once a batch holds the workflow app there, SIGKILL and restart it. False: no batch
        passed the point in time (disarmed, nothing killed)."""
        directory = self.stack.run_dir / "fault-points"
        fault_points.arm(directory, point)
        deadline = time.monotonic() + 60
        while not fault_points.reached(directory, point) and not self.abort.is_set() and time.monotonic() < deadline:
            self.abort.wait(0.1)
        # Reached, if only just as time ran out: the app waits there, and is killed below.
        was_reached = fault_points.reached(directory, point)
        fault_points.disarm(directory, point)
        if not was_reached:
            return False
        restart(self.stack, "workflow")
        return True

    def _freeze(self, name: str, hold_s: float) -> None:
        state = StackState.load(self.stack.state_path)
        process = state.find(name) if state else None
        if process is None or not process.alive():  # the launcher's rule: signal only what it started
            raise StackError(f"{name} is not running")
        os.killpg(process.pid, signal.SIGSTOP)
        try:
            self.abort.wait(hold_s)
        finally:
            os.killpg(process.pid, signal.SIGCONT)


# --- the run ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=None,
                        help="how long to publish (default 600; with --long 3600)")
    parser.add_argument("--output", type=Path, default=None,
                        help="the ledger as JSON (default bench/results/soak.json; with --long soak-long.json)")
    parser.add_argument("--long", action="store_true",
                        help="sample the stack's curves and check them for trends (make soak-long)")
    parser.add_argument("--sample-every", type=float, default=300,
                        help="with --long: seconds between samples (default 300)")
    parser.add_argument("--seed", type=int, default=None, help="seed of batches and faults (default: random)")
    parser.add_argument("--interval", type=float, default=1.5, help="seconds between batches (default 1.5)")
    parser.add_argument("--min-tasks", type=int, default=5)
    parser.add_argument("--max-tasks", type=int, default=60)
    parser.add_argument("--fault-interval", type=float, default=20, help="seconds between faults (default 20)")
    parser.add_argument("--fault-jitter", type=float, default=5, help="± seconds around it (default 5)")
    parser.add_argument("--freeze-min", type=float, default=5, help="shortest SIGSTOP in seconds (default 5)")
    parser.add_argument("--freeze-max", type=float, default=15, help="longest SIGSTOP in seconds (default 15)")
    parser.add_argument("--no-faults", action="store_true", help="publish only (a baseline)")
    parser.add_argument("--hostile-every", type=int, default=5, metavar="N",
                        help="a hostile event on `tasks` after every N batches (default 5; 0: none)")
    parser.add_argument("--fault-targets", default="", metavar="NAMES",
                        help="only these processes or signals, comma-separated (e.g. redis,SIGSTOP; default: all)")
    parser.add_argument("--publish-timeout", type=float, default=240,
                        help="give up on a batch no way accepted for this long (default 240)")
    parser.add_argument("--drain-seconds", type=float, default=300,
                        help="wait at most this long for outstanding outcomes (default 300)")
    parser.add_argument("--settle-seconds", type=float, default=10,
                        help="keep reading outcomes this long after the last one, for late duplicates (default 10)")
    parser.add_argument("--port-offset", type=int, default=DEFAULT_PORT_OFFSET,
                        help=f"added to every port of dapr.yaml and to Redis's (default {DEFAULT_PORT_OFFSET})")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="logs and data of the soak's stack (default .taskfan/soak-<offset>; emptied first)")
    args = parser.parse_args(argv)
    args.seconds = args.seconds if args.seconds is not None else (3600 if args.long else 600)
    args.output = args.output or (LONG_OUTPUT if args.long else DEFAULT_OUTPUT)
    if not 1 <= args.min_tasks <= args.max_tasks:
        parser.error("--min-tasks must be at least 1 and at most --max-tasks")
    if args.seconds <= 0 or args.interval <= 0:
        parser.error("--seconds and --interval must be positive")
    return args


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    run_dir = (args.run_dir or REPO_ROOT / ".taskfan" / f"soak-{args.port_offset}").resolve()
    signal.signal(signal.SIGTERM, _interrupt)
    say(f"seed {seed} (repeat the same batches and faults with --seed {seed}); run dir {run_dir}")
    try:
        stack = prepare_stack(run_dir, args.port_offset, args.long)
    except StackError as exc:
        say(f"cannot start: {exc}")
        return 2
    abort, end = threading.Event(), threading.Event()
    collector = Collector(stack.settings, stack.secrets.redis_password)
    publisher: Publisher | None = None
    injector: FaultInjector | None = None
    sampler: soak_curves.Sampler | None = None
    try:
        say(f"starting the stack: ingest {stack.ingest_url}, Redis {stack.settings.redis_port}, {SCORERS} scorers")
        try:
            stack.up(SCORERS, progress=lambda line: say(line))
        except StackError as exc:
            say(f"the stack did not start: {exc}")
            return 2
        rss_start = rss(stack)
        code = code_version()
        if code["uncommitted"]:
            say(f"note: the stack runs uncommitted changes of {len(code['uncommitted'])} file(s) "
                f"on top of {str(code['commit'])[:10]}")
        collector.start()
        publisher = Publisher(stack, random.Random(seed + 1), args, abort)
        injector = FaultInjector(stack, random.Random(seed), args, end, abort)
        started = time.time()
        say(f"publishing for {args.seconds:.0f} s, one batch every {args.interval} s; "
            + ("no faults" if args.no_faults else f"a fault every {args.fault_interval:.0f}±{args.fault_jitter:.0f} s"))
        if not args.no_faults:
            injector.start()
        if args.long:
            sampler = soak_curves.Sampler(stack, lambda: _finished(publisher, collector), args.sample_every, say)
            sampler.start()
        until = time.monotonic() + args.seconds
        feeder = threading.Thread(target=publisher.run, args=(until,), name="feeder", daemon=True)
        feeder.start()
        while feeder.is_alive():
            feeder.join(PROGRESS_EVERY_S)
            _progress(publisher, collector, injector)
        end.set()
        if sampler is not None:
            sampler.halt.set()
            sampler.join()
        if injector.is_alive():
            say("publishing period over; waiting for the fault in progress to be recovered from")
            injector.join()
        publisher.finish()
        _drain(publisher, collector, injector, args)
        ledger = build_ledger(publisher.published, collector.received, collector.dead_letters, injector.faults,
                              rss_start, rss(stack), hostile=publisher.hostile)
        ledger["log_errors"] = log_errors(stack)
        ledger["unreadable_stream_entries"] = collector.unreadable
        config = {"seconds": args.seconds, "seed": seed, "scorers": SCORERS, "interval_s": args.interval,
                  "tasks_per_batch": [args.min_tasks, args.max_tasks], "faults": not args.no_faults,
                  "fault_interval_s": args.fault_interval, "fault_jitter_s": args.fault_jitter,
                  "freeze_s": [args.freeze_min, args.freeze_max], "port_offset": args.port_offset,
                  "started_at": iso(started), "finished_at": iso(time.time()), "dapr": DAPR_VERSION,
                  "python": platform.python_version(), "cpus": os.cpu_count(),
                  "redis_appendfsync": stack.settings.redis_appendfsync, "logs": str(stack.logs_dir),
                  "code": code, "settings": stack_settings(stack.settings)}
        found = problems(ledger)
        if sampler is not None:
            curves = soak_curves.trends(sampler.samples)
            ledger["curves"] = {"every_s": args.sample_every, "warm_up_s": soak_curves.WARM_UP_S,
                                "change_per_half_hour": curves, "samples": sampler.samples,
                                "clocks": LONG_CLOCKS}
            found += soak_curves.problems(curves)
            found += soak_curves.log_problems(sampler.samples, stack.settings.log_max_bytes, stack.settings.log_files)
            soak_curves.plot(sampler.samples, curves, args.output.with_suffix(".png"))
            say(f"curves: {', '.join(f'{k} {v:+.1%}' for k, v in curves.items() if v is not None)} per half hour; "
                f"plotted in {args.output.with_suffix('.png')}")
        print(render(ledger, config), flush=True)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"config": config, "ok": not found, "problems": found, **ledger},
                                          indent=2, ensure_ascii=False) + "\n")
        say(f"ledger written to {args.output}")
        for problem in found:
            say(f"FAILED: {problem}")
        if not found:
            say("every accepted batch has exactly one outcome; every task is accounted for")
        return 1 if found else 0
    except StackError as exc:
        say(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        say("interrupted: stopping the stack (no ledger written)")
        abort.set()
        end.set()
        return 130
    finally:
        abort.set()
        end.set()
        if injector is not None and injector.is_alive():
            injector.join(300)  # a restart in progress finishes (bounded by its readiness checks)
        if publisher is not None:
            publisher.pool.shutdown(wait=True, cancel_futures=True)
        collector.halt.set()
        stack.down(progress=lambda line: say(line))


def _finished(publisher: Publisher, collector: Collector) -> list[tuple[float, float, int]]:
    """(received at, accepted -> outcome seconds, tasks) of every batch with an outcome, for the curves."""
    with publisher.lock:
        accepted = {p.batch_id: p for p in publisher.published if p.accepted_at is not None}
    with collector.lock:
        firsts = [(batch_id, received[0]) for batch_id, received in collector.received.items() if received]
    return [(r.received_at, r.received_at - accepted[b].accepted_at, len(accepted[b].tasks))  # type: ignore[operator]
            for b, r in firsts if b in accepted]


def _progress(publisher: Publisher, collector: Collector, injector: FaultInjector | None) -> None:
    with publisher.lock:
        records = list(publisher.published)
    accepted = [p for p in records if p.accepted_at is not None]
    waiting = sum(1 for p in accepted if not collector.has_outcome(p.batch_id))
    faults = injector.faults if injector else []
    active = next((f"{f.kind} {f.process}" for f in faults if f.ended_at is None), "none")
    say(f"published {len(accepted)} batches ({sum(len(p.tasks) for p in accepted)} tasks), "
        f"{len(records) - len(accepted)} being published | outcomes {collector.outcome_count()} | "
        f"waiting for {waiting} | faults {len(faults)} (active: {active}) | dead letters {len(collector.dead_letters)}")


def _drain(publisher: Publisher, collector: Collector, injector: FaultInjector | None,
           args: argparse.Namespace) -> None:
    """Wait (bounded) until every accepted batch has an outcome, then a little longer for late duplicates."""
    accepted = [p for p in publisher.published if p.accepted_at is not None]
    deadline = time.monotonic() + args.drain_seconds
    last_progress = time.monotonic()
    while time.monotonic() < deadline:
        waiting = [p for p in accepted if not collector.has_outcome(p.batch_id)]
        if not waiting:
            break
        if time.monotonic() - last_progress >= PROGRESS_EVERY_S:
            _progress(publisher, collector, injector)
            last_progress = time.monotonic()
        time.sleep(0.5)  # polling the collector's view, with the deadline above
    waiting = [p.batch_id for p in accepted if not collector.has_outcome(p.batch_id)]
    if waiting:
        say(f"gave up after {args.drain_seconds:.0f} s: {len(waiting)} batches without outcome: {waiting[:10]}")
    else:
        say(f"every accepted batch has an outcome; reading {args.settle_seconds:.0f} s more for late duplicates")
        time.sleep(args.settle_seconds)  # observing that nothing more arrives is the point of this wait


if __name__ == "__main__":
    sys.exit(main())
