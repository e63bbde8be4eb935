"""workflow app: one durable Dapr Workflow per batch, fanned out over chunks of its tasks, each chunk through
the pipeline's steps (pipeline.yaml), fanned in to one outcome."""
