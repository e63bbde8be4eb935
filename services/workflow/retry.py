"""Retry policy of the activities that only touch Dapr itself (state store, pub/sub)."""

from datetime import timedelta

import dapr.ext.workflow as wf

INFRA_RETRY = wf.RetryPolicy(
    first_retry_interval=timedelta(seconds=1),
    max_number_of_attempts=10,
    backoff_coefficient=2.0,
    max_retry_interval=timedelta(seconds=30),
)
