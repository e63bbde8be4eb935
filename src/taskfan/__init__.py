"""Taskfan's shared library: event contracts, settings, CloudEvents, logging and the Dapr app runtime.

The five microservices live in ``services/``; the ``taskfan`` CLI in ``taskfan.cli`` and the
local-stack launcher in ``taskfan.stack``.
"""
