"""The local stack: start, stop, inspect and crash-drill Redis, Dapr's control plane and the apps."""

from taskfan.stack.drill import restart
from taskfan.stack.launcher import Stack
from taskfan.stack.processes import (
    StackError,
    StackState,
    iter_log_records,
    pid_alive,
    port_open,
    port_owner,
    wait_until,
)

__all__ = ["Stack", "StackError", "StackState", "iter_log_records", "pid_alive", "port_open", "port_owner", "restart",
           "wait_until"]
