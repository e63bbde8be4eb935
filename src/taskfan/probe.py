"""``python3 -m taskfan.probe``: the startup and liveness probe of a Taskfan gRPC app on Kubernetes.

The apps listen on 127.0.0.1 only (their sidecar is their one caller), so the kubelet cannot reach them: it
runs this inside the container instead. It asks the app's own gRPC server for Dapr's ``HealthCheck``, with the
app token the sidecar uses, and fails if no answer comes within ``--timeout``: a process that is stopped, or
whose server's threads are all stuck, fails it, and the kubelet restarts the container. It imports grpc alone,
so a probe costs little CPU.
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc

HEALTH_CHECK = "/dapr.proto.runtime.v1.AppCallbackHealthCheck/HealthCheck"


def check(port: int, token: str, timeout_s: float) -> str | None:
    """None if the app on 127.0.0.1:``port`` answers its health check in time, else why not."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        # HealthCheckRequest and its response are empty messages: no protobuf import needed.
        call = channel.unary_unary(HEALTH_CHECK, request_serializer=bytes, response_deserializer=bytes)
        try:
            call(b"", timeout=timeout_s, metadata=[("dapr-api-token", token)] if token else None)
        except grpc.RpcError as exc:
            return f"{exc.code().name}: {exc.details()}"  # type: ignore[attr-defined]
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m taskfan.probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("APP_PORT") or 0),
                        help="the app's gRPC port (default $APP_PORT)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer (default 3)")
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error("no app port: give --port or set APP_PORT")
    failure = check(args.port, os.environ.get("APP_API_TOKEN", ""), args.timeout)
    if failure is not None:
        sys.stderr.write(f"taskfan probe: the app on 127.0.0.1:{args.port} is not healthy ({failure})\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
