"""The one launcher of the local stack: Redis, Dapr placement and scheduler, the apps of ``dapr.yaml``
and their sidecars.

``taskfan stack up`` returns only when every process answers its readiness check, and records what it
started in ``<run dir>/stack.json``; ``taskfan stack down`` stops exactly that and checks that no port
is left in use. No sleeps: every wait polls a health endpoint with a deadline. Readiness of the apps
and sidecars, and the crash drill, are in ``readiness`` and ``drill``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis
import yaml

from taskfan import pipeline, runfile, stack_secrets
from taskfan.contracts import CONSOLE_REDIS_COMMANDS, CONSOLE_REDIS_USER, KEEPER_USER, PUBSUB, TOPICS, AppId
from taskfan.runfile import RunFile
from taskfan.settings import Settings
from taskfan.stack import grants, logkeeper, pipeline_resources, private_files, readiness
from taskfan.stack.mtls import Mtls
from taskfan.stack.processes import (
    Process,
    StackError,
    StackState,
    free_ports,
    http_status,
    port_open,
    port_owner,
    redis_ping,
    start_time,
    stop_process,
    tail,
    wait_until,
)
from taskfan.stack.topology import MAX_REPLICAS, MAX_SCORERS, Instance, Topology

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
CHECKOUT = Path(__file__).resolve().parents[3]
# The stack's processes that are not Dapr apps or sidecars: they use no token.
NO_SECRETS = frozenset({"redis", "jaeger", "sentry", "placement", "scheduler", logkeeper.NAME})


def check_replicas(scorers: int, workflows: int) -> None:
    if not 1 <= scorers <= MAX_SCORERS:
        raise StackError(f"SCORERS must be between 1 and {MAX_SCORERS}, got {scorers}")
    if not 1 <= workflows <= MAX_REPLICAS:
        raise StackError(f"WORKFLOWS must be between 1 and {MAX_REPLICAS}, got {workflows}")


class Stack:
    def __init__(self, settings: Settings | None = None, run_file: RunFile | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.run_file = run_file or runfile.load()
        self.topology = Topology(self.run_file)
        # The install scripts and Jaeger's config: beside the run file in a checkout; for a run file of your own
        # elsewhere, in the checkout this Taskfan runs from.
        self.root = next((root for root in (self.run_file.root, CHECKOUT) if (root / "deploy").is_dir()),
                         self.run_file.root)
        self.run_dir = stack_secrets.run_dir(self.settings, self.run_file)
        self.logs_dir = self.run_dir / "logs"
        self.resources_dir = self.run_dir / "resources"
        self.config_path = self.run_dir / "config.yaml"
        self.name_resolution_db = self.run_dir / "name-resolution.db"
        self.state_path = self.run_dir / "stack.json"
        self.ingest_url = self.run_file.ingest_url()
        self.console_url = self.run_file.console_url()
        self.workflow = self.topology.instance("workflow")
        # The pipeline's declaration (PIPELINE_FILE, else pipeline.yaml): every app is given the same one.
        self.pipeline_file = pipeline.path().resolve()
        self._secrets: stack_secrets.StackSecrets | None = None
        self.mtls = Mtls(self.run_dir)
        self.sentry_address = f"127.0.0.1:{self.topology.sentry_ports[0]}"

    @functools.cached_property
    def pipeline(self) -> pipeline.Pipeline:
        """The declared pipeline, each of its step apps run by the run file."""
        try:
            declared = pipeline.load(self.pipeline_file)
        except pipeline.PipelineError as exc:
            raise StackError(str(exc)) from exc
        run = {app.app_id for app in self.run_file.apps}
        for step in declared.steps:
            if step.app_id not in run:
                raise StackError(f"step {step.name!r} of {self.pipeline_file} is served by app {step.app_id!r}, "
                                 f"which {self.run_file.path} does not run: add it there (README, 'Your own step')")
        return declared

    @property
    def secrets(self) -> stack_secrets.StackSecrets:
        """This stack's tokens and Redis password, generated on first use (``stack_secrets``)."""
        if self._secrets is None:
            try:
                self._secrets = stack_secrets.ensure(self.run_dir, self.settings.locked)
            except ValueError as exc:
                raise StackError(str(exc)) from None
        return self._secrets

    # Installation is the project's own job: both scripts return at once when already done.
    def _install(self, script_name: str, what: str) -> str:
        script = self.root / "deploy" / script_name
        if not script.is_file():
            raise StackError(f"{script} is missing: run the stack from a Taskfan checkout")
        result = subprocess.run(["bash", str(script)], stdout=subprocess.PIPE, text=True)
        if result.returncode != 0:
            raise StackError(f"{what} failed (see the lines above); script: {script}")
        return result.stdout.strip().splitlines()[-1]

    def dapr_bin(self) -> Path:
        return Path(self._install("install-dapr.sh", "building the Dapr runtime"))

    def redis_server(self) -> str:
        return self._install("install-redis.sh", "installing redis-server")

    def jaeger_bin(self) -> Path | None:
        """Jaeger's bin directory; None when it is not built yet. Its build then starts in the background (lowest
        priority, a session of its own, output in the install log) and this stack runs without traces: a first
        `make run` does not wait for what its job does not need. The next `up` finds it built."""
        script = self.root / "deploy" / "install-jaeger.sh"
        check = subprocess.run(["bash", str(script)], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "TASKFAN_CHECK_ONLY": "1"})
        if check.returncode == 0:
            return Path(check.stdout.strip().splitlines()[-1])
        if check.returncode != 3:
            raise StackError(f"checking for Jaeger failed; script: {script}")
        subprocess.Popen(["nice", "-n", "19", "bash", str(script)], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        return None

    def running(self) -> StackState | None:
        state = StackState.load(self.state_path)
        if state and any(p.alive() for p in state.processes):
            return state
        return None

    # --- up --------------------------------------------------------------------------------------

    def up(self, scorers: int | None = None, progress: Progress = print, workflows: int | None = None) -> StackState:
        scorers = self.settings.scorers if scorers is None else scorers
        workflows = self.settings.workflows if workflows is None else workflows
        check_replicas(scorers, workflows)
        if self.running():
            raise StackError(f"a stack is already running (state in {self.state_path}); "
                             "run `make down` first")
        bin_dir = self.dapr_bin()
        redis_server = self.redis_server()
        jaeger = self.jaeger_bin() if self.settings.tracing else None
        if self.settings.tracing and jaeger is None:
            progress("traces: Jaeger is being built in the background (once per machine, about 6 min); this stack "
                     "runs without traces, the next `make up` has them")
            self.settings = dataclasses.replace(self.settings, trace_sampling="0")
        # Everything the stack writes from here on is its user's only (private_files); the install scripts
        # above ran with the umask from before.
        with private_files.private_umask():
            return self._up(scorers, workflows, bin_dir, redis_server, jaeger, progress)

    def _up(self, scorers: int, workflows: int, bin_dir: Path, redis_server: str, jaeger: Path | None,
            progress: Progress) -> StackState:
        self.make_run_dir_private(progress)
        replicas = {AppId.WORKFLOW: workflows} if workflows > 1 else {}
        instances = self.topology.instances(scorers, replicas)
        self.check_ports_free(instances)
        self.pipeline  # checked before anything starts  # noqa: B018
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.secrets  # generated at the first `up`, kept by `down`  # noqa: B018
        self.render_resources()

        state = StackState(scorers=scorers, replicas=replicas)
        try:
            self.spawn(state, logkeeper.NAME, [sys.executable, "-m", "taskfan.stack.logkeeper", str(self.logs_dir)])
            self._start_redis(state, redis_server, progress)
            if jaeger is not None:
                self._start_jaeger(state, jaeger, progress)
            self._start_control_plane(state, bin_dir, progress)
            first, *rest = instances
            # The first sidecar creates the name-resolution database alone; the rest start together.
            self.start_app(state, first, bin_dir)
            readiness.wait_app(self, state, first, bin_dir)
            progress(f"ready: {first.label} (sidecar http {first.http_port})")
            for instance in rest:
                self.start_app(state, instance, bin_dir)
            for instance in rest:
                readiness.wait_app(self, state, instance, bin_dir)
                progress(f"ready: {instance.label} (sidecar http {instance.http_port})")
            for instance in self.workflows(state):
                readiness.wait_workflow_worker(self, state, bin_dir, instance)
        except BaseException:
            state.save(self.state_path)
            self.down(progress=lambda _: None)
            raise
        state.save(self.state_path)
        progress(f"stack is up: ingest API {self.ingest_url}, console {self.console_url} (`taskfan console`), "
                 f"{scorers} scorer(s), {workflows} workflow process(es), logs in {self.logs_dir}")
        return state

    def make_run_dir_private(self, progress: Progress) -> None:
        """The run folder and all in it owner-only, a folder from before (an older clone) mended."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            changed, not_ours = private_files.make_private(self.run_dir)
        except private_files.NotPrivate as exc:
            raise StackError(str(exc)) from None
        if changed:
            progress(f"made {len(changed)} files and folders of {self.run_dir} readable by their owner only")
        if not_ours:
            log.warning("%d paths of the run folder are another user's and keep their modes (the folder itself "
                        "is private), e.g. %s", len(not_ours), not_ours[0])

    def check_ports_free(self, instances: list[Instance], control_plane: bool = True) -> None:
        ports = [*self.topology.sentry_ports, *self.topology.placement_ports, *self.topology.scheduler_ports,
                 *(self.jaeger_ports if self.settings.tracing else [])] if control_plane else []
        for instance in instances:
            ports += self.sidecar_ports(instance) + ([instance.app_port] if instance.app_port else [])
            ports += self.topology.instance_web_ports(instance)
        busy = [f"{p} ({port_owner(p) or 'owner not visible'})" for p in ports if port_open(p)]
        if busy:
            raise StackError(f"ports already in use: {', '.join(busy)}; `make down` stops a Taskfan stack, "
                             "other programs must be stopped or moved (ports are set in dapr.yaml)")

    def render_resources(self) -> None:
        """Copy the run file's resources and configuration, pointed at this stack's Redis and run dir.

        The committed files are valid as they are for `dapr run -f .` with the default Redis; the
        launcher only sets ``redisHost`` (REDIS_HOST:REDIS_PORT), the secrets file and the name-resolution
        database path, and adds what names the pipeline's step apps (``pipeline_resources``).
        """
        self.resources_dir.mkdir(parents=True, exist_ok=True)
        for old in self.resources_dir.glob("*.yaml"):
            old.unlink()
        for folder in self.run_file.common.resources_paths:
            for source in sorted(self.run_file.resolve(folder).glob("*.yaml")):
                documents = list(yaml.safe_load_all(source.read_text()))
                for document in documents:
                    # The shared pub/sub lists the step apps and the outside apps granted; the console's own is
                    # loaded by the console's sidecars alone.
                    shared = (document.get("metadata") or {}).get("name") == PUBSUB
                    for item in (document.get("spec") or {}).get("metadata") or []:
                        if item.get("name") == "redisHost":
                            item["value"] = self.settings.redis_address
                        if shared and item.get("name") in pipeline_resources.SCOPES:
                            item["value"] = pipeline_resources.scopes_with_steps(str(item["value"]), self.pipeline)
                        if shared:
                            item["value"] = self._scoped(item.get("name"), item.get("value"))
                        if item.get("name") == "maxLenApprox":
                            item["value"] = str(self.settings.stream_max_entries)
                        if item.get("name") == "secretsFile":
                            item["value"] = str(stack_secrets.path(self.run_dir))
                (self.resources_dir / source.name).write_text(yaml.safe_dump_all(documents, sort_keys=False))
        config = yaml.safe_load(self.run_file.resolve(self.run_file.common.config_file_path).read_text())
        if not self.settings.locked:
            config.get("spec", {}).pop("accessControl", None)  # it needs the SPIFFE ids of mTLS
        pipeline_resources.with_step_operations(config, self.pipeline)
        # Tracing to the stack's Jaeger, at the configured share of requests; none at all when that is 0.
        config.setdefault("spec", {})["tracing"] = {"samplingRate": self.settings.trace_sampling, **({"otel": {
            "endpointAddress": f"127.0.0.1:{self.settings.traces_otlp_port}", "isSecure": False,
            "protocol": "grpc"}} if self.settings.tracing else {})}
        retention = config["spec"].setdefault("workflow", {}).setdefault("stateRetentionPolicy", {})
        retention["completed"] = f"{self.settings.workflow_retention_s}s"
        resolver = config.get("spec", {}).get("nameResolution", {}).get("configuration")
        if resolver is not None and "connectionString" in resolver:
            resolver["connectionString"] = str(self.name_resolution_db)
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.name_resolution_db.unlink(missing_ok=True)

    def _scoped(self, name: str | None, value: object) -> object:
        """Pub/sub scopes plus the outside apps the settings grant (TASKS_PUBLISHERS, OUTCOME_SUBSCRIBERS)."""
        publishers, subscribers = (Settings.comma_list(self.settings.tasks_publishers),
                                   Settings.comma_list(self.settings.outcome_subscribers))
        if name == "publishingScopes":
            return ";".join([str(value), *(f"{a}=tasks" for a in publishers),
                             *(f"{a}=" for a in subscribers if a not in publishers)])
        if name == "subscriptionScopes":
            return ";".join([str(value), *(f"{a}=outcomes,tasks-deadletter" for a in subscribers),
                             *(f"{a}=" for a in publishers if a not in subscribers)])
        return value

    def spawn(self, state: StackState, name: str, cmd: list[str], env: dict[str, str] | None = None,
              ports: list[int] | None = None, cwd: Path | None = None) -> Process:
        log_path = self.logs_dir / f"{name}.log"
        with open(log_path, "ab", opener=private_files.open_private) as out:
            # Own session: the stack outlives `make up`, and `down` can stop each process group.
            # Secrets travel in the environment (owner-only in /proc), never on the command line, and are
            # not recorded in stack.json; Redis reads its password from a file instead.
            # umask: what the process writes (Redis's AOF, etcd's data, rotated logs) is its user's only.
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env={**stack_secrets.without_secrets(os.environ), **self.secret_env(name),
                                         **(env or {})},
                                    cwd=cwd or self.run_dir, start_new_session=True, umask=private_files.UMASK)
        process = Process(name, proc.pid, str(log_path), ports or [], cmd, env or {}, str(cwd or self.run_dir),
                          started=start_time(proc.pid))
        state.processes.append(process)
        state.save(self.state_path)
        return process

    def app_of(self, name: str) -> str:
        """The app id of a process of the stack: an app, its sidecar, or a sidecar of its own (``sidecar-<id>``)."""
        label = name.removesuffix("-daprd")
        every = {app.app_id: MAX_REPLICAS for app in self.run_file.apps}
        for instance in self.topology.instances(MAX_SCORERS, every):
            if instance.label == label:
                return instance.app_id
        return label.removeprefix("sidecar-")

    def secret_env(self, name: str) -> dict[str, str]:
        """The secrets process ``name`` uses, and no others (a test reads every process's environment): a sidecar
        and its app the Dapr API token and the app token; ingest its bearer token and its Redis user
        (``redis_acl``); the console the ingest token and its viewer credential (its two roles' sign-ins); Redis,
        Sentry, placement, the scheduler, Jaeger and the log keeper none (Redis reads its password from a file)."""
        if name in NO_SECRETS or not self.settings.locked:
            return {}
        env = {"DAPR_API_TOKEN": self.secrets.sidecar_token(self.app_of(name)),
               "APP_API_TOKEN": self.secrets.app_api_token}
        if name == AppId.INGEST:
            env |= {"INGEST_TOKEN": self.secrets.ingest_token,
                    "REDIS_KEEPER_PASSWORD": self.secrets.redis_keeper_password}
        elif self.app_of(name) == AppId.CONSOLE and not name.endswith("-daprd"):  # each replica: its operator's and
            # its viewer's credentials, its Redis user (stream lag)
            env |= {"INGEST_TOKEN": self.secrets.ingest_token, "CONSOLE_VIEW_TOKEN": self.secrets.console_view_token,
                    "REDIS_CONSOLE_PASSWORD": self.secrets.redis_console_password}
        return env

    def redis_acl(self) -> str:
        """Redis's users: the default one (the password the components use); ``taskfan-keeper``, which
        may read memory and stream backlogs and trim the Taskfan streams, nothing else (ingest's gauge);
        ``taskfan-console``, which may only read the streams' length and consumer groups (the console's lag)."""
        if not self.secrets.redis_password:
            return ""
        streams = " ".join(f"~{stream}" for stream in TOPICS)
        outside = "".join(f"user {grant.user} {' '.join(grant.acl_rules(password))}\n"
                          for grant, password in grants.existing(self.run_dir, *self._granted()))
        return (f"requirepass {self.secrets.redis_password}\n"
                f"user {KEEPER_USER} on >{self.secrets.redis_keeper_password} resetkeys {streams} resetchannels "
                "-@all +ping +info +xinfo|groups +xinfo|stream +xlen +xpending +xtrim\n"
                f"user {CONSOLE_REDIS_USER} on >{self.secrets.redis_console_password} resetkeys {streams} "
                f"resetchannels -@all {' '.join(CONSOLE_REDIS_COMMANDS)}\n" + outside)

    def _granted(self) -> tuple[list[str], list[str]]:
        return (Settings.comma_list(self.settings.tasks_publishers),
                Settings.comma_list(self.settings.outcome_subscribers))

    def grant(self, app_id: str) -> tuple[grants.Grant, dict[str, str]]:
        """The grant of an outside app (``grants``): its folder written from the running stack's resources, its
        Redis user set now (and in redis.conf from the next start on). Its secrets: the Redis password and its
        own sidecar's API token."""
        if self.running() is None or not (self.resources_dir / "pubsub.yaml").exists():
            raise StackError("no stack is running; start it with `make up`")
        if not self.settings.locked:
            raise StackError("this stack runs with SECURITY=off: there is nothing to grant")
        grant = grants.granted(app_id, *self._granted(), self.run_dir)
        with private_files.private_umask():  # the grant's folder is the run folder's: owner-only
            stored = grants.ensure(grant, self.resources_dir, self.config_path)
        client = redis.Redis(host=self.settings.redis_host, port=self.settings.redis_port,
                             password=self.secrets.redis_password, socket_timeout=10)
        with client:
            client.execute_command("ACL", "SETUSER", grant.user, *grant.acl_rules(stored["redis-password"]))
        self.redis_config.write_text(self.redis_acl())  # a restarted Redis keeps the user
        return grant, stored

    @property
    def redis_config(self) -> Path:
        """Redis's config file: its users and their passwords (owner-only; a command line is visible to all)."""
        return stack_secrets.path(self.run_dir).parent / "redis.conf"

    def _start_redis(self, state: StackState, redis_server: str, progress: Progress) -> None:
        host, port = self.settings.redis_host, self.settings.redis_port
        if port_open(port, host):
            if not redis_ping(host, port, self.secrets.redis_password):
                raise StackError(f"a server on {host}:{port} does not answer as a Redis with this stack's password "
                                 f"({stack_secrets.path(self.run_dir)}); stop it or set REDIS_PORT")
            progress(f"using the Redis server already running on {host}:{port}")
            return
        data_dir = self.run_dir / "redis"
        data_dir.mkdir(parents=True, exist_ok=True)
        config = self.redis_config
        config.touch(mode=0o600)
        config.write_text(self.redis_acl())
        process = self.spawn(state, "redis", [
            redis_server, str(config), "--bind", host, "--port", str(port), "--dir", str(data_dir),
            "--appendonly", "yes", "--appendfsync", self.settings.redis_appendfsync, "--save", "",
            "--auto-aof-rewrite-percentage", "100",
            "--auto-aof-rewrite-min-size", self.settings.redis_aof_rewrite_min_size,
            # Never evict: every key is a batch's state or an unacknowledged event. At the ceiling Redis refuses
            # writes; ingest stops accepting batches well before it (services/ingest/capacity.py).
            "--maxmemory", self.settings.redis_maxmemory, "--maxmemory-policy", "noeviction",
            "--daemonize", "no",
        ], ports=[port])
        state.redis_started = True
        wait_until(lambda: readiness.service_ready(self, "redis"), "redis", alive=readiness.alive_check(process))
        progress(f"ready: redis on {host}:{port}")

    @property
    def jaeger_ports(self) -> list[int]:
        """OTLP in, the query API over HTTP, and over gRPC (the port below the HTTP one)."""
        return [self.settings.traces_otlp_port, self.settings.traces_query_port, self.settings.traces_query_port - 1]

    def _start_jaeger(self, state: StackState, bin_dir: Path, progress: Progress) -> None:
        otlp, query, query_grpc = self.jaeger_ports
        process = self.spawn(state, "jaeger", [str(bin_dir / "jaeger"), "--config",
                                               str(self.root / "deploy" / "jaeger" / "config.yaml")],
                             env={"TRACES_OTLP_PORT": str(otlp), "TRACES_QUERY_PORT": str(query),
                                  "TRACES_QUERY_GRPC_PORT": str(query_grpc)}, ports=self.jaeger_ports)
        wait_until(lambda: port_open(otlp) and http_status(f"{self.settings.traces_url}/api/services") == 200,
                   "jaeger", alive=readiness.alive_check(process))
        progress(f"ready: jaeger (traces: {self.settings.traces_url}, OTLP in on 127.0.0.1:{otlp})")

    def _start_sentry(self, state: StackState, bin_dir: Path, progress: Progress) -> None:
        self.mtls.prepare()
        first_start = not self.mtls.has_ca()
        sentry_port, sentry_health = self.topology.sentry_ports
        command = self.mtls.sentry_command(bin_dir, sentry_port, sentry_health)
        sentry = self.spawn(state, "sentry", command, ports=[sentry_port, sentry_health])
        wait_until(lambda: readiness.service_ready(self, "sentry") and self.mtls.has_ca(), "sentry",
                   alive=readiness.alive_check(sentry))
        if first_start:
            # Right after creating its CA, Sentry's file watcher reloads it and restarts its server: start
            # it again now, on the files it wrote, rather than race that restart.
            sentry.stop()
            state.processes.remove(sentry)
            sentry = self.spawn(state, "sentry", command, ports=[sentry_port, sentry_health])
            wait_until(lambda: readiness.service_ready(self, "sentry"), "sentry", alive=readiness.alive_check(sentry))
            progress(f"created the stack's certificate authority in {self.mtls.ca_dir}")
        progress("ready: sentry")

    def _start_control_plane(self, state: StackState, bin_dir: Path, progress: Progress) -> None:
        tls: list[str] = []
        if self.settings.locked:
            self._start_sentry(state, bin_dir, progress)
            tls = self.mtls.control_plane_args(self.sentry_address)
        placement_port, placement_health, placement_raft = self.topology.placement_ports
        scheduler_port, scheduler_health, etcd_client, etcd_peer = self.topology.scheduler_ports
        placement = self.spawn(state, "placement", [
            str(bin_dir / "placement"), "--port", str(placement_port),
            "--healthz-port", str(placement_health), "--healthz-listen-address", "127.0.0.1",
            "--listen-address", "127.0.0.1",
            "--initial-cluster", f"dapr-placement-0=127.0.0.1:{placement_raft}",
            "--enable-metrics=false", "--log-as-json", *tls,
        ], self._control_plane_env("dapr-placement"), ports=[placement_port, placement_health])
        scheduler = self.spawn(state, "scheduler", [
            str(bin_dir / "scheduler"), "--port", str(scheduler_port),
            "--healthz-port", str(scheduler_health), "--healthz-listen-address", "127.0.0.1",
            "--listen-address", "127.0.0.1",
            "--etcd-data-dir", str(self.run_dir / "scheduler"),
            # The jobs of finished workflows are deleted (workflow state retention); so that the store's
            # size follows what it holds: old revisions compacted every few minutes, a snapshot (which lets
            # etcd drop write-ahead logs) every 10,000 writes, two of each kept, and a defragmentation at
            # start once 16 MB are free in the database file.
            "--etcd-compaction-mode", "periodic", "--etcd-compaction-retention", "5m",
            "--etcd-snapshot-count", "10000", "--etcd-max-snapshots", "2", "--etcd-max-wals", "2",
            "--etcd-experimental-bootstrap-defrag-threshold-megabytes", "16",
            "--etcd-client-port", str(etcd_client),
            "--etcd-initial-cluster", f"dapr-scheduler-server-0=http://127.0.0.1:{etcd_peer}",
            "--enable-metrics=false", "--log-as-json", *tls,
        ], self._control_plane_env("dapr-scheduler"), ports=[scheduler_port, scheduler_health])
        for process in (placement, scheduler):
            wait_until(lambda name=process.name: readiness.service_ready(self, name), process.name,
                       alive=readiness.alive_check(process))
            progress(f"ready: {process.name}")

    def _control_plane_env(self, name: str) -> dict[str, str]:
        return self.mtls.control_plane_env(name) if self.settings.locked else {}

    def _sidecar_env(self, app_id: str) -> dict[str, str]:
        return {"DAPR_HOST_IP": "127.0.0.1", **(self.mtls.sidecar_env(app_id) if self.settings.locked else {})}

    def daprd_command(self, bin_dir: Path, instance: Instance) -> list[str]:
        common = self.run_file.common
        cmd = [
            str(bin_dir / "daprd"), "--app-id", instance.app_id,
            "--dapr-http-port", str(instance.http_port), "--dapr-grpc-port", str(instance.grpc_port),
            "--dapr-internal-grpc-port", str(instance.internal_grpc_port),
            # Sidecar-to-sidecar traffic stays on this machine (the default listens on every interface).
            "--dapr-internal-grpc-listen-address", "127.0.0.1",
            "--dapr-listen-addresses", common.api_listen_addresses,
            "--resources-path", str(self.resources_dir), "--config", str(self.config_path),
            "--placement-host-address", common.placement_host_address,
            "--scheduler-host-address", common.scheduler_host_address,
            "--max-body-size", common.max_body_size,
            # Not expressible in the run file: mTLS with the stack's Sentry, Dapr's metrics on loopback (its
            # HTTP port + 6000), JSON logs.
            *(["--enable-mtls", "--sentry-address", self.sentry_address] if self.settings.locked else []),
            *(["--metrics-port", str(instance.metrics_port), "--metrics-listen-address", "127.0.0.1"]
              if instance.metrics_port else ["--enable-metrics=false"]),
            "--log-as-json", "--log-level", common.log_level,
            # On SIGTERM daprd stops taking calls and lets the ones in progress finish, for this long at
            # most: a step call's deadline, so a scorer removed by `stack scale` finishes its calls.
            "--dapr-graceful-shutdown-seconds", str(self.graceful_shutdown_s),
        ]
        if self.profiling(instance):
            # daprd serves pprof on each API listen address (loopback here), with no token: the bench asks for it.
            cmd += ["--enable-profiling", "--profile-port", str(instance.profile_port)]
        if instance.app_port:
            cmd += ["--app-port", str(instance.app_port), "--app-protocol", instance.app_protocol]
        return cmd

    def start_app(self, state: StackState, instance: Instance, bin_dir: Path) -> None:
        # The environment the Dapr CLI gives an app, plus the replica number (the scorer logs it).
        env = {
            **instance.env,
            "APP_ID": instance.app_id,
            "DAPR_HTTP_PORT": str(instance.http_port),
            "DAPR_GRPC_PORT": str(instance.grpc_port),
            "APP_PORT": str(instance.app_port or ""),
            "TASKFAN_REPLICA": instance.label.rsplit("-", 1)[-1] if instance.name else "0",
            pipeline.PIPELINE_FILE_ENV: str(self.pipeline_file),
            "TRACE_SAMPLING": self.settings.trace_sampling,  # 0 while Jaeger is still being built (jaeger_bin)
        }
        app_ports = ([instance.app_port] if instance.app_port else []) + self.topology.instance_web_ports(instance)
        self.spawn(state, instance.label, list(instance.command), env, ports=app_ports, cwd=instance.app_dir)
        self.start_daprd(state, instance, bin_dir)

    def start_daprd(self, state: StackState, instance: Instance, bin_dir: Path) -> Process:
        return self.spawn(state, instance.sidecar_label, self.daprd_command(bin_dir, instance),
                          self._sidecar_env(instance.app_id),
                          ports=self.sidecar_ports(instance))

    def profiling(self, instance: Instance) -> bool:
        """Whether this sidecar serves Go's pprof endpoint (SIDECAR_PROFILING=on, and it has a port for it)."""
        return self.settings.profiling_sidecars and instance.profile_port is not None

    def sidecar_ports(self, instance: Instance) -> list[int]:
        """Every port the instance's sidecar listens on, its pprof port when it serves one."""
        return instance.ports + ([instance.profile_port] if self.profiling(instance) and instance.profile_port else [])

    def restart_daprd(self, state: StackState, instance: Instance, bin_dir: Path, reason: str) -> None:
        daprd = state.find(instance.sidecar_label)
        # The message carries the reason: the CLI prints warnings without their extra fields.
        log.warning("restarting a sidecar (%s): %s", instance.label, reason,
                    extra={"sidecar": instance.label, "log": tail(Path(daprd.log), 3)})
        daprd.stop()
        state.processes.remove(daprd)
        self.start_daprd(state, instance, bin_dir)

    @property
    def graceful_shutdown_s(self) -> int:
        return math.ceil(self.settings.step_timeout_s)

    # --- scale -----------------------------------------------------------------------------------

    def scale(self, scorers: int, progress: Progress = print) -> StackState:
        """Add or remove scorer replicas of the running stack, while batches run.

        A new replica takes calls once its sidecar is registered in name resolution. A replica is removed
        sidecar first: on SIGTERM daprd stops accepting calls, finishes those in progress
        (``--dapr-graceful-shutdown-seconds``) and leaves name resolution; then its app stops, idle. A call that
        reaches it in between is refused, and the step client makes it again (random replica), so nothing fails
        because of a scale-down.
        """
        check_replicas(scorers, 1)
        state = self._running()
        self._scale(state, AppId.SCORER, state.scorers, scorers, progress)
        state.scorers = scorers
        state.save(self.state_path)
        progress(f"{scorers} scorer(s) running")
        return state

    def scale_app(self, app_id: str, replicas: int, progress: Progress = print) -> StackState:
        """Add or remove replicas of the workflow app or of a step app other than the scorer (the pipeline's
        validator, enricher, a step of your own), as ``scale`` does the scorer's. Dapr spreads a step's calls
        over its replicas at random; the workflow app's processes share the batches (a new one counts once its
        worker is admitted; a removed one's batches go on in the others: their state is in Redis and the
        scheduler, and placement moves their actors)."""
        if app_id == AppId.SCORER:
            raise StackError("the scorer's replicas are scaled with --scorers N")
        if app_id not in (AppId.WORKFLOW, AppId.CONSOLE) and app_id not in self.pipeline.app_ids:
            raise StackError(f"{app_id!r} is neither the workflow app, the console nor a step app of "
                             f"{self.pipeline_file}: the step apps are {', '.join(self.pipeline.app_ids)}")
        if not 1 <= replicas <= MAX_REPLICAS:
            raise StackError(f"replicas of {app_id} must be between 1 and {MAX_REPLICAS}, got {replicas}")
        state = self._running()
        self._scale(state, app_id, state.replicas.get(app_id, 1), replicas, progress)
        if replicas > 1:
            state.replicas[app_id] = replicas
        else:
            state.replicas.pop(app_id, None)  # one each is what a state without the app says
        state.save(self.state_path)
        progress(f"{replicas} {app_id} replica(s) running")
        return state

    def _running(self) -> StackState:
        state = self.running()
        if state is None:
            raise StackError("no stack is running; start it with `make up`")
        return state

    def _scale(self, state: StackState, app_id: str, current: int, wanted: int, progress: Progress) -> None:
        added = [self.topology.instance(app_id, i) for i in range(current, wanted)]
        if added:
            self.check_ports_free(added, control_plane=False)
            bin_dir = self.dapr_bin()
            for instance in added:
                self.start_app(state, instance, bin_dir)
            for instance in added:
                readiness.wait_app(self, state, instance, bin_dir)
                if app_id == AppId.WORKFLOW:
                    readiness.wait_workflow_worker(self, state, bin_dir, instance)
                progress(f"ready: {instance.label} (sidecar http {instance.http_port})")
        for replica in reversed(range(wanted, current)):
            instance = self.topology.instance(app_id, replica)
            started = time.monotonic()
            pair = [state.find(instance.sidecar_label), state.find(instance.label)]
            # A step's sidecar first (it drains the calls in progress); a console's app first: it answers what it
            # wrote and gives its writer's lease up through its sidecar.
            for process in reversed(pair) if app_id == AppId.CONSOLE else pair:
                stop_process(process.pid, grace=self.graceful_shutdown_s + 5)
                state.processes.remove(process)
            progress(f"removed: {instance.label} (drained in {time.monotonic() - started:.1f}s)")

    def consoles(self, state: StackState) -> list[Instance]:
        """The console's processes of a running stack."""
        return [self.topology.instance(AppId.CONSOLE, i) for i in range(state.replicas.get(AppId.CONSOLE, 1))]

    def workflows(self, state: StackState) -> list[Instance]:
        """The workflow app's processes of a running stack."""
        return [self.topology.instance(AppId.WORKFLOW, i) for i in range(state.replicas.get(AppId.WORKFLOW, 1))]

    # --- down ------------------------------------------------------------------------------------

    def down(self, progress: Progress = print) -> None:
        state = StackState.load(self.state_path)
        if state is None:
            progress("no stack is running")
            return
        # Apps first (so no app talks to a stopped sidecar), then sidecars, control plane, Redis. The apps
        # stop together, then the sidecars: each waits out its own graceful shutdown, not the others'.
        sidecars = [p for p in state.processes if p.name.endswith("-daprd")]
        apps = [p for p in state.processes if f"{p.name}-daprd" in {s.name for s in sidecars}]
        for group in (apps, sidecars):
            with ThreadPoolExecutor(max(1, len(group))) as pool:
                list(pool.map(Process.stop, group))
        for process in reversed(state.processes):
            if process not in apps and process not in sidecars:
                process.stop()
        busy = [p for process in state.processes for p in process.ports if port_open(p)]
        if busy:
            raise StackError(f"ports still in use after stopping the stack: {busy}")
        self.state_path.unlink(missing_ok=True)
        progress(f"stack stopped ({len(state.processes)} processes)")

    def status(self) -> list[tuple[str, int, bool]]:
        state = StackState.load(self.state_path)
        return [(p.name, p.pid, p.alive()) for p in (state.processes if state else [])]

    # --- a sidecar of one's own ----------------------------------------------------------------------

    def start_sidecar(self, app_id: str) -> tuple[Instance, subprocess.Popen[bytes]]:
        """A sidecar with no app port, on free ports, joined to the running stack's control plane.

        For a streaming subscriber (``outcomes --follow``: the app id is its consumer group) or a
        workflow worker of a benchmark.
        """
        if self.running() is None:
            raise StackError("no stack is running; start it with `make up`")
        bin_dir = self.dapr_bin()
        instance = Instance(app_id, *free_ports(3), None, name=f"sidecar-{app_id}")
        self.logs_dir.mkdir(mode=private_files.PRIVATE_DIR, parents=True, exist_ok=True)
        out = open(self.logs_dir / f"{instance.label}.log", "ab",  # noqa: SIM115 - lives with the process
                   opener=private_files.open_private)
        proc = subprocess.Popen(self.daprd_command(bin_dir, instance), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL,
                                env={**stack_secrets.without_secrets(os.environ), **self.secret_env(instance.label),
                                     **self._sidecar_env(app_id)},
                                cwd=self.run_dir, start_new_session=True, umask=private_files.UMASK)
        url = f"http://127.0.0.1:{instance.http_port}/v1.0/healthz"
        try:
            wait_until(lambda: http_status(url) == 204, f"{instance.label} sidecar",
                       alive=lambda: None if proc.poll() is None else
                       f"daprd exited:\n{tail(self.logs_dir / f'{instance.label}.log')}")
        except BaseException:
            self.stop_sidecar(proc)
            raise
        return instance, proc

    def stop_sidecar(self, proc: subprocess.Popen[bytes]) -> None:
        stop_process(proc.pid)
        proc.wait()
