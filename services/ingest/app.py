"""ingest process: serves the HTTP API; its sidecar (app id ``ingest``) publishes to pub/sub."""

import redis
import uvicorn

from services.ingest import capacity
from services.ingest.api import create_api
from taskfan import logs
from taskfan.contracts import KEEPER_USER, AppId
from taskfan.http_doors import local_hosts
from taskfan.settings import Settings


def main() -> None:
    settings = Settings.from_env()
    logs.configure(AppId.INGEST, settings.log_level)
    if not settings.ingest_token and settings.locked:
        raise SystemExit("INGEST_TOKEN is not set: ingest never runs without authentication "
                         "(`taskfan stack up` generates the stack's token)")
    hosts = local_hosts(settings.ingest_port) | set(Settings.comma_list(settings.ingest_hosts))
    if not settings.redis_keeper_password and settings.locked:
        raise SystemExit("REDIS_KEEPER_PASSWORD is not set: ingest cannot tell when the stack is full "
                         "(`taskfan stack up` generates it)")
    gauge = capacity.Gauge(lambda: redis.Redis(
        host=settings.redis_host, port=settings.redis_port, username=KEEPER_USER if settings.locked else None,
        password=settings.redis_keeper_password or None, socket_timeout=5, socket_connect_timeout=5),
        settings.stream_max_entries, settings.stream_retention_s)
    gauge.start()
    api = create_api(token=settings.ingest_token, hosts=hosts, gauge=gauge)
    uvicorn.run(api, host=settings.ingest_host, port=settings.ingest_port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
