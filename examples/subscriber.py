"""A minimal outcome subscriber of your own: a Dapr streaming subscription through your own sidecar.

Start a sidecar for it (its app id is your consumer group), then run this file:
    ~/.cache/taskfan/dapr/1.18.1/bin/daprd --app-id my-subscriber --dapr-grpc-port 4600 \
        --dapr-http-port 3600 --dapr-internal-grpc-port 5600 \
        --resources-path .taskfan/resources --config .taskfan/config.yaml &
    .venv/bin/python examples/subscriber.py
"""

import json
import os

from dapr.clients import DaprClient

with DaprClient(os.environ.get("SIDECAR", "127.0.0.1:4600")) as client:
    subscription = client.subscribe("pubsub", "outcomes")
    for message in subscription:
        if message is None:  # no message within the poll interval
            continue
        outcome = json.loads(message.raw_data())
        print(outcome["batch_id"], outcome["completed"], outcome["average_score"], flush=True)
        subscription.respond_success(message)  # acknowledge, or Dapr redelivers it
