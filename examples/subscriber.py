"""A minimal outcome subscriber of your own: a Dapr streaming subscription through your own sidecar.

Start a sidecar for it (its app id is your consumer group, granted by OUTCOME_SUBSCRIBERS) with its grant
(its own token, resources and mTLS identity) in the environment, then run this file (README, "Getting outcomes"):
    eval "$(.venv/bin/taskfan stack env --app my-subscriber)"
    ~/.cache/taskfan/dapr/1.18.1/bin/daprd --app-id my-subscriber --dapr-grpc-port 4600 \
        --dapr-http-port 3600 --dapr-internal-grpc-port 5600 --dapr-listen-addresses 127.0.0.1 \
        --dapr-internal-grpc-listen-address 127.0.0.1 --enable-mtls --sentry-address $SENTRY_ADDRESS \
        --enable-metrics=false --resources-path $TASKFAN_GRANT/resources --config $TASKFAN_GRANT/config.yaml &
    .venv/bin/python examples/subscriber.py
"""

import json
import os

# The SDK waits until a sidecar answers on DAPR_HTTP_PORT before it connects: this one's own (on a cluster the
# injector sets it).
os.environ.setdefault("DAPR_HTTP_PORT", "3600")

from dapr.clients import DaprClient  # noqa: E402 - reads DAPR_HTTP_PORT when imported

with DaprClient(os.environ.get("SIDECAR", "127.0.0.1:4600")) as client:
    subscription = client.subscribe("pubsub", "outcomes")
    for message in subscription:
        if message is None:  # no message within the poll interval
            continue
        outcome = json.loads(message.raw_data())
        print(outcome["batch_id"], outcome["completed"], outcome["average_score"], flush=True)
        subscription.respond_success(message)  # acknowledge, or Dapr redelivers it
