"""ingest process: serves the HTTP API; its sidecar (app id ``ingest``) publishes to pub/sub."""

import uvicorn

from services.ingest.api import create_api
from taskfan import logs
from taskfan.contracts import AppId
from taskfan.http_doors import local_hosts
from taskfan.settings import Settings


def main() -> None:
    settings = Settings.from_env()
    logs.configure(AppId.INGEST, settings.log_level)
    if not settings.ingest_token and settings.locked:
        raise SystemExit("INGEST_TOKEN is not set: ingest never runs without authentication "
                         "(`taskfan stack up` generates the stack's token)")
    hosts = local_hosts(settings.ingest_port) | set(Settings.comma_list(settings.ingest_hosts))
    api = create_api(token=settings.ingest_token, hosts=hosts)
    uvicorn.run(api, host=settings.ingest_host, port=settings.ingest_port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
