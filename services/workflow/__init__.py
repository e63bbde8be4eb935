"""workflow app: one durable Dapr Workflow per batch, fan-out per task, fan-in to one outcome."""
