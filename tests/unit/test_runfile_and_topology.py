"""dapr.yaml is the single source of which apps run and on which ports: the launcher follows it."""

import re
import socket
import sys
from pathlib import Path

import pytest
import yaml

from taskfan import runfile
from taskfan.contracts import AppId
from taskfan.settings import Settings
from taskfan.stack import Stack
from taskfan.stack.topology import MAX_REPLICAS, MAX_SCORERS, Instance, Topology

RUN_FILE = Path(__file__).resolve().parents[2] / "dapr.yaml"


def edited_run_file(tmp_path, edit) -> runfile.RunFile:
    """A copy of the repository's dapr.yaml, changed by ``edit(document)``, beside the same folders."""
    document = yaml.safe_load(RUN_FILE.read_text())
    edit(document)
    for folder in ("components", "deploy", "services"):
        (tmp_path / folder).symlink_to(RUN_FILE.parent / folder)
    path = tmp_path / "dapr.yaml"
    path.write_text(yaml.safe_dump(document))
    return runfile.load(path)


def test_the_run_file_lists_every_app_of_the_stack():
    assert [app.app_id for app in runfile.load(RUN_FILE).apps] == [a.value for a in AppId]


def test_changing_an_apps_port_in_the_run_file_moves_where_the_launcher_starts_it(tmp_path):
    def move_validator(document):
        validator = next(a for a in document["apps"] if a["appID"] == "validator")
        validator.update(appPort=7002, daprHTTPPort=7502, daprGRPCPort=7503, daprInternalGRPCPort=7504)

    stack = Stack(Settings(run_dir=str(tmp_path / "run")), edited_run_file(tmp_path, move_validator))
    validator = stack.topology.instance("validator")
    assert (validator.app_port, validator.http_port, validator.grpc_port, validator.internal_grpc_port) == (
        7002, 7502, 7503, 7504)
    command = stack.daprd_command(Path("/bin"), validator)
    for flag, value in (("--app-port", "7002"), ("--dapr-http-port", "7502"), ("--dapr-grpc-port", "7503"),
                        ("--dapr-internal-grpc-port", "7504"), ("--app-id", "validator"),
                        ("--metrics-port", "13502"), ("--metrics-listen-address", "127.0.0.1")):
        assert command[command.index(flag) + 1] == value
    # A sidecar on free ports (`outcomes --follow`, stack.start_sidecar) has no metrics listener.
    free = Instance("my-subscriber", 45001, 45002, 45003, None)
    assert "--enable-metrics=false" in stack.daprd_command(Path("/bin"), free) and free.ports == [45001, 45002, 45003]
    assert validator.command == (sys.executable, "-m", "services.validator.app")
    assert validator.app_dir == (RUN_FILE.parent / "services" / "validator").resolve()


def test_scorer_replicas_add_their_index_to_the_scorer_ports():
    topology = Topology(runfile.load(RUN_FILE))
    scorers = [i for i in topology.instances(3) if i.app_id == AppId.SCORER]
    assert [s.label for s in scorers] == ["scorer-0", "scorer-1", "scorer-2"]
    assert [s.http_port for s in scorers] == [3510, 3511, 3512]
    assert [s.app_port for s in scorers] == [6010, 6011, 6012]
    assert [s.metrics_port for s in scorers] == [9510, 9511, 9512]


def test_workflow_processes_beyond_the_first_are_spaced_clear_of_every_other_port():
    topology = Topology(runfile.load(RUN_FILE))
    everything = topology.instances(MAX_SCORERS, {app.app_id: MAX_REPLICAS for app in topology.run_file.apps})
    workflows = [i for i in everything if i.app_id == AppId.WORKFLOW]
    assert [w.label for w in workflows] == ["workflow", "workflow-1", "workflow-2", "workflow-3"]
    assert [w.http_port for w in workflows] == [3501, 3601, 3701, 3801]
    assert [w.app_port for w in workflows] == [6001, 6101, 6201, 6301]
    assert [w.env["METRICS_PORT"] for w in workflows] == ["9101", "9201", "9301", "9401"]
    # No two processes share a port, and none takes the control plane's, Redis's or the web ports.
    ports = [port for instance in everything for port in (*instance.ports, instance.profile_port)]
    ports += [int(value) for i in everything for key, value in i.env.items() if key.endswith("_PORT")]
    taken = {*topology.placement_ports, *topology.scheduler_ports, *topology.sentry_ports, 6379}
    assert len(ports) == len(set(ports)) and not set(ports) & taken
    assert topology.instances(1) == topology.instances(1, {})  # one workflow process unless asked


def test_sidecars_serve_pprof_on_loopback_only_when_profiling_is_asked_for(tmp_path):
    def flags(stack: Stack, instance: Instance) -> list[str]:
        command = stack.daprd_command(Path("/bin"), instance)
        return [flag for flag in command if flag.startswith("--") and "profil" in flag]

    quiet = Stack(Settings(run_dir=str(tmp_path / "quiet")), runfile.load(RUN_FILE))
    workflow = quiet.topology.instance("workflow")
    assert flags(quiet, workflow) == [] and quiet.sidecar_ports(workflow) == workflow.ports
    profiled = Stack(Settings(sidecar_profiling="on", run_dir=str(tmp_path / "profiled")), runfile.load(RUN_FILE))
    command = profiled.daprd_command(Path("/bin"), workflow)
    assert command[command.index("--profile-port") + 1] == "8501" and "--enable-profiling" in command
    # daprd binds pprof to its API listen addresses, which the run file keeps on loopback.
    assert command[command.index("--dapr-listen-addresses") + 1] == "127.0.0.1"
    assert profiled.sidecar_ports(workflow) == [*workflow.ports, 8501]  # `down` checks it is closed too
    free = Instance("my-subscriber", 45001, 45002, 45003, None)  # a sidecar of its own: never
    assert flags(profiled, free) == [] and profiled.sidecar_ports(free) == free.ports


def test_the_control_plane_and_ingest_ports_come_from_the_run_file(tmp_path):
    def move(document):
        document["common"]["placementHostAddress"] = "127.0.0.1:7050"
        next(a for a in document["apps"] if a["appID"] == "ingest")["env"]["INGEST_PORT"] = "7080"

    topology = Topology(edited_run_file(tmp_path, move))
    assert topology.placement_ports == (7050, 7051, 7052)
    assert topology.ingest_port == 7080
    assert topology.run_file.ingest_url() == "http://127.0.0.1:7080"


def test_resources_are_rendered_with_this_stacks_redis_and_run_dir(tmp_path):
    stack = Stack(Settings(redis_port=6399, run_dir=str(tmp_path)), runfile.load(RUN_FILE))
    stack.render_resources()
    pubsub = yaml.safe_load((tmp_path / "resources" / "pubsub.yaml").read_text())
    assert {"name": "redisHost", "value": "127.0.0.1:6399"} in pubsub["spec"]["metadata"]
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert config["spec"]["nameResolution"]["configuration"]["connectionString"] == str(
        tmp_path / "name-resolution.db")


def test_no_dapr_timeout_on_the_step_apps_the_step_client_keeps_the_deadline(tmp_path, monkeypatch):
    # daprd 1.18.1 panics when a caller goes away while it streams an answer under a resiliency timeout
    # (components/resiliency.yaml): the deadline is the step client's, from STEP_TIMEOUT_MS.
    stack = Stack(Settings(step_timeout_ms=12_500, run_dir=str(tmp_path)), runfile.load(RUN_FILE))
    stack.render_resources()
    spec = yaml.safe_load((tmp_path / "resources" / "resiliency.yaml").read_text())["spec"]
    assert "timeouts" not in spec["policies"] and "apps" not in spec["targets"]
    repo = Path(__file__).resolve().parents[2]
    chart = (repo / "deploy" / "helm" / "taskfan" / "templates" / "dapr-resources.yaml").read_text()
    assert "timeout:" not in chart and "timeouts:" not in chart
    monkeypatch.setenv("STEP_TIMEOUT_MS", "12500")
    assert Settings.from_env().step_timeout_s == 12.5  # what the workflow app gives its StepClient


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["apps"][1].update(metricsPort=9999), "metricsPort"),
    (lambda d: d["apps"][1].pop("daprHTTPPort"), "daprHTTPPort"),
    (lambda d: d["common"].update(placementHostAddress="nowhere"), "host:port"),
])
def test_a_run_file_the_launcher_cannot_honour_is_refused_with_the_reason(tmp_path, edit, message):
    with pytest.raises(runfile.RunFileError, match=message):
        Topology(edited_run_file(tmp_path, edit)).placement_ports  # noqa: B018 - the property parses


def test_the_run_file_is_found_from_a_subfolder(monkeypatch):
    monkeypatch.delenv(runfile.RUN_FILE_ENV, raising=False)
    assert runfile.find(RUN_FILE.parent / "services" / "workflow") == RUN_FILE


def listening_below(limit: int) -> socket.socket:
    """A listening socket on a port under ``limit`` that the kernel picked (its pick can be as high as 60,999)."""
    while True:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        if sock.getsockname()[1] < limit:
            sock.listen()
            return sock
        sock.close()


def test_an_occupied_port_is_named_with_its_owner(tmp_path):
    import os

    from taskfan.stack import StackError

    # Low enough that the ports derived from it (Dapr's metrics: the HTTP port + 6000) are ports too.
    with listening_below(59_000) as squatter:
        port = squatter.getsockname()[1]

        def squat(document):
            next(a for a in document["apps"] if a["appID"] == "enricher")["daprHTTPPort"] = port

        stack = Stack(Settings(run_dir=str(tmp_path / "run")), edited_run_file(tmp_path, squat))
        enricher = stack.topology.instance("enricher")
        with pytest.raises(StackError, match=rf"{port} \(pid {os.getpid()} \("):
            stack.check_ports_free([enricher])


def test_the_sidecars_message_limit_is_the_apps():
    from taskfan.contracts import MAX_MESSAGE_BYTES

    stack = Stack(Settings(), runfile.load(RUN_FILE))
    command = stack.daprd_command(Path("/bin"), stack.topology.instance("workflow"))
    size = command[command.index("--max-body-size") + 1]
    assert size.endswith("Mi") and int(size[:-2]) * 1024 * 1024 == MAX_MESSAGE_BYTES


def _seconds(text: str) -> float:
    return float(text.removesuffix("s"))


def test_daprs_intake_retries_end_well_before_redis_hands_the_event_to_a_second_delivery():
    # While Dapr retries an event (resiliency policy `intake`), Redis keeps it pending; past the pub/sub's
    # processingTimeout it redelivers it alongside. Retries of 2 s x 12 end with half a minute to spare
    # for the handler's own time. Checked in both copies of the resources: the local files and the chart.
    repo = Path(__file__).resolve().parents[2]
    local_policy = yaml.safe_load((repo / "components" / "resiliency.yaml").read_text())["spec"]["policies"][
        "retries"]["intake"]
    pubsub = yaml.safe_load((repo / "components" / "pubsub.yaml").read_text())["spec"]["metadata"]
    timeout = _seconds(next(m["value"] for m in pubsub if m["name"] == "processingTimeout"))
    chart = (repo / "deploy" / "helm" / "taskfan" / "templates" / "dapr-resources.yaml").read_text()
    chart_policy = yaml.safe_load(re.search(r"\n      intake:\n(?:        .*\n)+", chart).group(0))["intake"]
    chart_timeout = _seconds(re.search(r'name: processingTimeout\n\s+value: "(\w+)"', chart).group(1))
    for policy, processing_timeout in ((local_policy, timeout), (chart_policy, chart_timeout)):
        assert policy["policy"] == "constant"  # a horizon with no randomness in it
        horizon = _seconds(policy["duration"]) * policy["maxRetries"]
        assert horizon + 30 <= processing_timeout


def test_the_stacks_limits_reach_redis_dapr_and_the_chart_alike(tmp_path):
    # One setting each: Redis's ceiling and AOF rewrite, the streams' cap, the workflow retention; the chart
    # carries the same shapes, and the Redis user of ingest's keeper names the same streams in both.
    from taskfan.contracts import KEEPER_USER, TOPICS

    settings = Settings(run_dir=str(tmp_path), redis_maxmemory="300mb", stream_max_entries=500,
                        workflow_retention_s=45)
    stack = Stack(settings, runfile.load(RUN_FILE))
    stack.render_resources()
    pubsub = yaml.safe_load((tmp_path / "resources" / "pubsub.yaml").read_text())["spec"]["metadata"]
    assert next(m["value"] for m in pubsub if m["name"] == "maxLenApprox") == "500"
    retention = yaml.safe_load((tmp_path / "config.yaml").read_text())["spec"]["workflow"]["stateRetentionPolicy"]
    assert retention == {"completed": "45s", "anyTerminal": "24h"}
    acl = stack.redis_acl().splitlines()[1]
    assert acl.startswith(f"user {KEEPER_USER} on >") and all(f" ~{topic} " in acl for topic in TOPICS)
    repo = Path(__file__).resolve().parents[2]
    templates = repo / "deploy" / "helm" / "taskfan" / "templates"
    chart_acl = re.search(r"user taskfan-keeper on >%s (.*?)\\n", (templates / "redis.yaml").read_text()).group(1)
    assert chart_acl == acl.split(" ", 4)[4]  # the same grants, word for word
    chart = (templates / "dapr-resources.yaml").read_text()
    assert "stateRetentionPolicy:" in chart and "value: {{ .Values.streams.maxEntries | quote }}" in chart
    assert "--maxmemory {{ .Values.redis.maxmemory }} --maxmemory-policy noeviction" in (
        templates / "redis.yaml").read_text()


def test_a_secrets_file_from_before_a_secret_was_added_gets_it_and_keeps_the_rest(tmp_path):
    import json

    from taskfan import stack_secrets

    first = stack_secrets.ensure(tmp_path)
    file = stack_secrets.path(tmp_path)
    stored = json.loads(file.read_text())
    del stored["redis-keeper-password"]
    file.write_text(json.dumps(stored))
    again = stack_secrets.ensure(tmp_path)
    assert again.redis_password == first.redis_password and len(again.redis_keeper_password) > 30
    assert stack_secrets.load(tmp_path) == again and file.stat().st_mode & 0o777 == 0o600
