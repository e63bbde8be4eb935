"""What is worth trying again: the retry policy of the activities that only touch Dapr itself (state store,
pub/sub), and which failures can pass by themselves."""

from datetime import timedelta

import dapr.ext.workflow as wf
import grpc

from services.workflow.ledger_store import LedgerBusy

INFRA_RETRY = wf.RetryPolicy(
    first_retry_interval=timedelta(seconds=1),
    max_number_of_attempts=10,
    backoff_coefficient=2.0,
    max_retry_interval=timedelta(seconds=30),
)

# gRPC answers that say something about the request itself: the same request fails the same way again.
_DETERMINISTIC_CODES = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE,
                                  grpc.StatusCode.UNIMPLEMENTED})


def is_transient(exc: BaseException) -> bool:
    """A failure that can pass by itself (a sidecar, Redis, placement or the scheduler restarting; the
    admission ledger busy); anything else is a fact about the event, and is answered at once."""
    if isinstance(exc, grpc.RpcError):
        code = exc.code() if callable(getattr(exc, "code", None)) else None
        return code not in _DETERMINISTIC_CODES
    return isinstance(exc, OSError | LedgerBusy)
