"""Taskfan: publish a batch of tasks, get one outcome per batch, on the Dapr runtime."""
