"""Taskfan's apps, one package each: ingest, workflow, the three steps of the pipeline as shipped (validator,
enricher, scorer: pipeline.yaml) and the console."""
