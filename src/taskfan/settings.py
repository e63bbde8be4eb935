"""Every tunable of Taskfan, read from environment variables with defaults, in one place."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields

STEP_TIMEOUT_FLOOR_S = 30.0


class SettingsError(ValueError):
    pass


@dataclass(frozen=True)
class Settings:
    redis_host: str = "127.0.0.1"
    redis_port: int = 6379
    # When the Redis the stack starts fsyncs its append-only file. A killed Redis process loses nothing
    # either way (the AOF is written before Redis replies); `everysec` bounds a machine crash's loss to ~1 s.
    redis_appendfsync: str = "everysec"
    # The Redis the stack starts holds at most this much (its `maxmemory`, evicting nothing): ingest refuses
    # new batches with a 503 once Redis holds 80 % of it (services/ingest/capacity.py), so batches in
    # progress have room to finish. A number of bytes, or with a unit as Redis reads it (512mb, 4gb).
    redis_maxmemory: str = "2gb"
    # Each Taskfan stream (tasks, outcomes, the dead-letter topics) holds at most about this many events
    # (Dapr's maxLenApprox); ingest refuses new batches (503) while a consumer group has 80 % of it not yet
    # acknowledged, so no event is trimmed before it is read. Events every group acknowledged are trimmed
    # once STREAM_RETENTION_S old (services/ingest/capacity.py).
    stream_max_entries: int = 100_000
    stream_retention_s: int = 3600
    # The append-only file is rewritten (compacted to the data it holds) once it has doubled since its last
    # rewrite and is at least this big: its size follows the data, not the writes.
    redis_aof_rewrite_min_size: str = "16mb"
    # A finished batch's workflow state (history, status, reminders) is purged by Dapr this long after it
    # completed (the Configuration's workflow state retention policy); its outcome record answers after that.
    # A failed or terminated one is kept a day, for investigation.
    workflow_retention_s: int = 60
    # How long a batch id stays bound to its content and its outcome record is kept (a duplicate is
    # ignored, `taskfan status` answers), and what a crash leaves of a batch's data expires (a Redis TTL).
    record_ttl_s: int = 7 * 24 * 3600
    # The pipeline's declaration (README, "Your own step"); empty: pipeline.yaml of the checkout. The launcher
    # gives every app of the stack the one it read.
    pipeline_file: str = ""
    # Where the ingest app listens (the stack sets INGEST_PORT from dapr.yaml).
    ingest_host: str = "127.0.0.1"
    ingest_port: int = 8080
    # Host headers ingest answers besides 127.0.0.1:PORT and localhost:PORT (comma-separated), e.g. its
    # Kubernetes Service names; any other Host is refused (no DNS rebinding from a browser).
    ingest_hosts: str = ""
    # Where clients (the CLI) find a running stack; empty: from the dapr.yaml of the checkout.
    ingest_url: str = ""
    # Dapr's tracing: the share of requests traced (its samplingRate, 0 to 1), exported over OTLP to the Jaeger
    # the stack starts on loopback (query API on TRACES_QUERY_PORT, which the console links); 0: no tracing,
    # no Jaeger.
    trace_sampling: str = "1"
    traces_otlp_port: int = 4317
    traces_query_port: int = 16686
    # The web console (services/console): its address, and other Host headers it answers (as INGEST_HOSTS).
    console_host: str = "127.0.0.1"
    console_port: int = 8090
    console_hosts: str = ""
    # Where the CLI finds a console (`taskfan batches`, `taskfan console`); empty: the checkout's dapr.yaml.
    console_url: str = ""
    taskfan_token: str = field(default="", repr=False)  # the credential the CLI sends it, if not the stack's own
    # How long a console sign-in lasts (services/console/sessions.py): the browser signs in again after it.
    console_session_ttl_s: int = 8 * 3600
    # What the console remembers, in its state store, across its restarts (services/console/history.py): the
    # summaries of the newest CONSOLE_HISTORY batches, and batches' details (their tasks, for re-runs, and
    # their results) up to CONSOLE_DETAIL_BYTES in all, the oldest batches' deleted first.
    console_history: int = 10_000
    console_detail_bytes: int = 64 * 2**20
    workflow_dapr_url: str = ""
    # Scorer behaviour: a slow model emulated with a non-blocking delay and a per-replica cap.
    score_delay_ms: int = 0
    scorer_concurrency: int = 8
    # Fault injection for tests and drills: task ids matching this glob fail in the scorer.
    scorer_fail_tasks: str = ""
    # Tasks in progress per batch: 4 chunks of 100 (why 400: README, Benchmarks).
    max_in_flight: int = 400
    # Tasks in progress across all batches (admission control): a batch holds up to MAX_IN_FLIGHT of
    # them while it runs; batches beyond the cap wait in arrival order. 4 batches at full width.
    max_tasks_in_progress: int = 1600
    # The deadline of one step call (validate, enrich, score); 0: sized from the scorer's delay, see
    # step_timeout_s. Enforced by Dapr's resiliency policy on the step apps, and by the step client.
    step_timeout_ms: int = 0
    scorers: int = 1
    # Workflow app processes of the local stack (`make up WORKFLOWS=N`): Dapr spreads the batches over them.
    workflows: int = 1
    # The workflow app's Prometheus endpoint (/metrics: the backlog the scorers' autoscaler reads); 0: none.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0
    log_level: str = "INFO"
    # Each process's log in the local stack is rotated past this size, LOG_FILES old copies kept
    # (src/taskfan/stack/logkeeper.py).
    log_max_bytes: int = 20 * 2**20
    log_files: int = 3
    # Outside Dapr apps allowed to publish batches to `tasks`, and to subscribe to `outcomes` and
    # `tasks-deadletter` (comma-separated app ids; a subscriber's app id is its consumer group). Every
    # other app id is refused those topics by its sidecar (pub/sub scopes).
    tasks_publishers: str = ""
    outcome_subscribers: str = "taskfan-cli,my-subscriber"
    # Secrets (never printed: repr=False). The launcher generates them per stack and gives them to its
    # processes; clients read them from the stack's secrets file when these are empty (stack_secrets).
    dapr_token_key: str = field(default="", repr=False)  # the sidecars' tokens derive from it (stack_secrets)
    app_api_token: str = field(default="", repr=False)
    ingest_token: str = field(default="", repr=False)
    # The console's viewer credential: signs in to look, never to act, and ingest does not take it (the ingest
    # token is the operator's: it publishes, and acts in the console).
    console_view_token: str = field(default="", repr=False)
    redis_password: str = field(default="", repr=False)
    # The Redis user `taskfan-keeper` (ingest's): reads memory and stream backlogs, trims the streams, no more.
    redis_keeper_password: str = field(default="", repr=False)
    # The Redis user `taskfan-console` (the console's): reads the streams' length and consumer groups, no more.
    redis_console_password: str = field(default="", repr=False)
    # "off" starts a stack with no tokens, no mTLS, no access control and no Redis password: only for
    # `make bench` to measure what the locks cost side by side (security_cost_pct), in a run directory
    # of its own. Never for a stack anyone else can reach.
    security: str = "on"
    # "on" gives every sidecar of the stack Go's pprof endpoint (/debug/pprof/ on its HTTP port + 5000, on the
    # API listen address: loopback), for `make bench` to read where daprd's CPU goes. No token guards it,
    # so it is off unless asked for.
    sidecar_profiling: str = "off"
    # `make bench`: the servers it starts of its own, on these ports (its stacks' Redis, the Celery peer's Redis,
    # the Temporal peer's dev server and the next two), moved when another run on the machine holds them.
    bench_redis_port: int = 6391
    bench_celery_redis_port: int = 6390
    bench_temporal_port: int = 7233
    # The local stack's run directory (logs, data, rendered components); empty: .taskfan/ beside dapr.yaml.
    run_dir: str = ""
    # Test-only: where the workflow app looks for armed fault points (services/workflow/faults.py); empty:
    # no fault point is ever looked at.
    fault_points_dir: str = ""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(f.name.upper())
            if raw is None or raw == "":
                continue
            if f.type in ("int", int):
                try:
                    values[f.name] = int(raw)
                except ValueError:
                    raise SettingsError(f"{f.name.upper()} must be a whole number, got {raw!r}") from None
            else:
                values[f.name] = raw
        settings = cls(**values)  # type: ignore[arg-type]
        settings.check()
        return settings

    def check(self) -> None:
        if self.redis_appendfsync not in ("always", "everysec", "no"):
            raise SettingsError("REDIS_APPENDFSYNC must be always, everysec or no")
        for name in ("redis_maxmemory", "redis_aof_rewrite_min_size"):
            if not re.fullmatch(r"[1-9][0-9]*(k|kb|m|mb|g|gb)?", getattr(self, name).lower()):
                raise SettingsError(f"{name.upper()} is a size as Redis reads it (a number of bytes, or 512mb, "
                                    f"4gb), got {getattr(self, name)!r}")
        for name in ("security", "sidecar_profiling"):
            if getattr(self, name) not in ("on", "off"):
                raise SettingsError(f"{name.upper()} must be on or off")
        try:
            sampling = float(self.trace_sampling)
        except ValueError:
            sampling = -1.0
        if not 0 <= sampling <= 1:
            raise SettingsError(f"TRACE_SAMPLING is a share of requests between 0 and 1, got {self.trace_sampling!r}")
        for name in ("score_delay_ms", "step_timeout_ms"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{name.upper()} must be >= 0")
        for name in ("scorer_concurrency", "max_in_flight", "max_tasks_in_progress", "scorers", "workflows",
                     "redis_port",
                     "ingest_port", "console_port", "traces_otlp_port", "traces_query_port", "workflow_retention_s",
                     "stream_max_entries", "stream_retention_s", "log_max_bytes", "log_files", "record_ttl_s",
                     "console_history", "console_detail_bytes", "console_session_ttl_s", "bench_redis_port",
                     "bench_celery_redis_port", "bench_temporal_port"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name.upper()} must be >= 1")

    @property
    def step_timeout_s(self) -> float:
        """A step call's deadline: STEP_TIMEOUT_MS, else twice the time a call can legitimately wait at one
        scorer replica (every task in progress queued ahead of it), and never under 30 s.
        """
        if self.step_timeout_ms:
            return self.step_timeout_ms / 1000
        queued_s = self.max_tasks_in_progress * self.score_delay_ms / 1000 / self.scorer_concurrency
        return max(STEP_TIMEOUT_FLOOR_S, 2 * queued_s)

    @property
    def tracing(self) -> bool:
        return float(self.trace_sampling) > 0

    @property
    def traces_url(self) -> str:
        """Jaeger's query API (``/api/traces/<trace id>``)."""
        return f"http://127.0.0.1:{self.traces_query_port}"

    @property
    def locked(self) -> bool:
        return self.security == "on"

    @property
    def profiling_sidecars(self) -> bool:
        return self.sidecar_profiling == "on"

    @staticmethod
    def comma_list(listed: str) -> list[str]:
        return [item.strip() for item in listed.split(",") if item.strip()]

    @property
    def redis_address(self) -> str:
        return f"{self.redis_host}:{self.redis_port}"


@contextlib.contextmanager
def patched_environ(values: Mapping[str, object]) -> Iterator[None]:
    """These variables in this process's environment for a while, then as they were: for a stack started
    meanwhile with other settings (the benchmark's scenarios, a test's own stack), whose processes inherit it.
    """
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update({key: str(value) for key, value in values.items()})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
