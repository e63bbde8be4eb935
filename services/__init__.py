"""The five Taskfan microservices, one package each: ingest, workflow, validator, enricher, scorer."""
