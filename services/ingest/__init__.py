"""ingest app: the HTTP API that accepts batches and publishes them to the ``tasks`` topic."""
