"""``taskfan outcomes``: recent outcomes from the Redis stream, or ``--follow`` through a Dapr subscription."""

from __future__ import annotations

import json
import sys
from typing import Any

from taskfan import events
from taskfan.cli.common import EXIT_REFUSED, EXIT_UNREACHABLE, CliError, local_stack, settings
from taskfan.contracts import OUTCOMES_TOPIC, PUBSUB, Outcome


def cmd_outcomes(follow: bool, group: str, batch: str | None, count: int) -> int:
    if follow:
        return follow_outcomes(group, batch)
    return recent_outcomes(count, batch)


def stored_outcomes(count: int) -> list[dict[str, Any]]:
    """The latest ``count`` outcomes, oldest first, from the Redis stream where Dapr's pub/sub keeps them."""
    import redis

    current = settings()
    client = redis.Redis(host=current.redis_host, port=current.redis_port, password=current.redis_password or None)
    try:
        entries = client.xrevrange(OUTCOMES_TOPIC, count=count)
    except redis.RedisError as exc:
        raise CliError(f"cannot read Redis at {current.redis_address}: {exc}", EXIT_UNREACHABLE) from None
    outcomes = []
    for _, fields in reversed(entries):
        try:
            outcomes.append(events.decode(fields[b"data"], Outcome).model_dump(mode="json"))
        except events.EventError:
            continue  # something else published on the topic; not ours to show
    return outcomes


def find_outcome(batch_id: str, search: int = 10_000) -> dict[str, Any] | None:
    return next((o for o in reversed(stored_outcomes(search)) if o["batch_id"] == batch_id), None)


def recent_outcomes(count: int, batch_id: str | None) -> int:
    if batch_id:
        outcome = find_outcome(batch_id)
        if outcome is None:
            raise CliError(f"no outcome for batch {batch_id} in the last 10,000 outcomes", EXIT_REFUSED)
        print(json.dumps(outcome))
        return 0
    for outcome in stored_outcomes(count):
        print(json.dumps(outcome))
    return 0


def follow_outcomes(group: str, batch_id: str | None) -> int:
    """A real Dapr subscription: a sidecar of our own with app id ``group`` streams ``outcomes``."""
    import dapr.conf
    from dapr.clients import DaprClient

    from taskfan.stack import StackError

    stack = local_stack()
    # The SDK reads DAPR_API_TOKEN once, at import; our own sidecar expects its app id's token.
    dapr.conf.settings.DAPR_API_TOKEN = stack.secrets.sidecar_token(group)
    try:
        sidecar, process = stack.start_sidecar(group)
    except StackError as exc:
        raise CliError(str(exc), EXIT_UNREACHABLE) from None
    # ... and waits for a sidecar to answer on DAPR_HTTP_PORT (3500 unless set) first: ours.
    dapr.conf.settings.DAPR_HTTP_PORT = sidecar.http_port
    try:
        with DaprClient(f"127.0.0.1:{sidecar.grpc_port}") as client:
            # subscribe() returns once the sidecar acknowledged the stream: only then is it live.
            try:
                subscription = client.subscribe(PUBSUB, OUTCOMES_TOPIC)
            except Exception as exc:
                if "is not allowed" not in str(exc):
                    raise
                raise CliError(f"consumer group {group!r} may not subscribe to {OUTCOMES_TOPIC!r}: add it to "
                               "OUTCOME_SUBSCRIBERS and restart the stack (pub/sub scopes)", EXIT_REFUSED) from None
            print(f"following {PUBSUB}/{OUTCOMES_TOPIC} as consumer group {group!r} (Ctrl-C to stop)",
                  file=sys.stderr, flush=True)
            try:
                for message in subscription:
                    if message is None:
                        continue
                    # Acknowledge first: printing is all this subscriber does with an outcome.
                    subscription.respond_success(message)
                    try:
                        outcome = Outcome.model_validate_json(message.raw_data())
                    except ValueError as exc:
                        print(f"skipping an event that is not an outcome: {exc}", file=sys.stderr)
                        continue
                    if batch_id and outcome.batch_id != batch_id:
                        continue
                    print(json.dumps(outcome.model_dump(mode="json")), flush=True)
                    if batch_id:
                        return 0
            finally:
                subscription.close()
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop_sidecar(process)
    return 0
