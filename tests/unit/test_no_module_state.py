"""No service holds mutable module-level state. The workflow service: its parts (clients, the live book, the step
calls, the ledger's locks, the metrics) are made by the app and handed in (services/workflow/app.py), so two
apps in one process, or two tests, never share one. Constants stay: numbers, text, tuples, frozen sets,
enums, read-only mappings, frozen models, the SDK's immutable policies."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import importlib
import logging
import pathlib
import pkgutil
import re
import types
import typing

import dapr.ext.workflow as wf
import pydantic
from dapr.clients.grpc._state import StateOptions

import services.workflow

IMMUTABLE = (int, float, str, bytes, bool, type(None), datetime.timedelta, datetime.tzinfo, enum.Enum, re.Pattern,
             range, types.MappingProxyType, logging.Logger, typing.TypeVar, type(annotations),
             pathlib.PurePath,
             # The SDKs' option objects and pydantic's adapters, made once and only read.
             StateOptions, wf.RetryPolicy, pydantic.TypeAdapter)
# Made once per process from files that do not change while it runs, and only read: the console's templates
# (Jinja's environment) and the declared pipeline's step names (pipeline.yaml, read on first use).
READ_ONCE = frozenset({"services.console.pages.TEMPLATES", "services.console.records.steps"})


def immutable(value: object) -> bool:
    if isinstance(value, IMMUTABLE):
        return True
    if isinstance(value, tuple | frozenset):
        return all(immutable(item) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return type(value).__dataclass_params__.frozen  # type: ignore[attr-defined]
    return type(value).__module__ in ("typing", "types", "collections.abc") or isinstance(value, type)


def module_state(package: types.ModuleType) -> list[str]:
    found = []
    for info in pkgutil.iter_modules(package.__path__):
        if info.name == "__main__":
            continue  # running it is running the command
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for name, value in vars(module).items():
            if name.startswith("__") or isinstance(value, types.ModuleType | types.FunctionType):
                continue
            if callable(value) and not isinstance(value, type) and getattr(value, "__module__", "") != module.__name__:
                continue  # a function or a class imported from elsewhere
            if not immutable(value) and f"{module.__name__}.{name}" not in READ_ONCE:
                found.append(f"{module.__name__}.{name}: {type(value).__name__}")
    return found


def test_the_workflow_service_holds_no_mutable_module_level_state():
    assert module_state(services.workflow) == []


def test_nor_do_the_other_services_or_the_shared_package():
    import services.console
    import services.console.routes
    import services.enricher
    import services.ingest
    import services.scorer
    import services.validator
    import taskfan
    import taskfan.cli
    import taskfan.stack

    packages = (services.console, services.console.routes, services.ingest, services.validator, services.enricher,
                services.scorer, taskfan, taskfan.cli, taskfan.stack)
    assert [found for package in packages for found in module_state(package)] == []
