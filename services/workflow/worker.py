"""The workflow worker: registers the workflows and activities under their stable names.

Changing the code while batches run (README, "Upgrading with batches in flight"): an activity runs the code
of the process that takes it, so a changed activity applies to running batches at their next call (keep its
input and output models readable both ways). The batch workflow is replayed from its history, so a change
to the durable calls it makes goes into a new version: its function registered here under a new name, made
``LATEST``; batches started before it finish on the version they started with, which stays registered
until none of them is left.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any

import dapr.ext.workflow as wf

from services.workflow import names
from services.workflow.activities import BatchActivities
from services.workflow.batch_workflow import process_batch
from taskfan.dapr_app import sdk_logger_options

# Each version of the batch workflow still registered, and the one a new batch starts on.
WORKFLOW_VERSIONS: Mapping[str, Callable[..., Any]] = MappingProxyType({"v1": process_batch})
LATEST = "v1"


def create_runtime(activities: BatchActivities, versions: Mapping[str, Callable[..., Any]] = WORKFLOW_VERSIONS,
                   latest: str = LATEST) -> wf.WorkflowRuntime:
    """A runtime with the batch workflow's ``versions`` (new batches on ``latest``) and ``activities``'
    methods registered under their names."""
    runtime = wf.WorkflowRuntime(maximum_thread_pool_workers=16, logger_options=sdk_logger_options())
    for version, fn in versions.items():
        runtime.register_versioned_workflow(fn, name=names.BATCH_WORKFLOW, version_name=version,
                                            is_latest=version == latest)
    for name, method in activities.registered().items():
        runtime.register_activity(_own_function(method), name=name)
    return runtime


def _own_function(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """A bound method as a function of its own: the SDK marks what it registers on the function itself (which
    a bound method shares with every instance), and reads the input's model from its signature."""

    @functools.wraps(method)
    async def activity(ctx: wf.WorkflowActivityContext, inp: Any = None) -> Any:
        return await method(ctx, inp)

    activity.__signature__ = inspect.signature(method, eval_str=True)  # type: ignore[attr-defined]
    return activity
