"""``taskfan stack``: start, stop, list and crash-drill the local stack (what `make up`/`make down` run)."""

from __future__ import annotations

from taskfan.cli.common import EXIT_BAD_INPUT, EXIT_REFUSED, CliError, local_stack
from taskfan.contracts import AppId


def cmd_stack(action: str, app: str | None = None, scorers: int | None = None, workflows: int | None = None,
              replicas: int | None = None, every_app: bool = False) -> int:
    from taskfan.stack import StackError, restart
    from taskfan.stack.drill import roll
    from taskfan.stack.grants import GrantError

    stack = local_stack()
    try:
        if action == "up":
            stack.up(scorers, workflows=workflows)
        elif action == "down":
            stack.down()
        elif action == "scale":
            if app and replicas is not None and scorers is None and workflows is None:
                stack.scale_app(app, replicas)
            elif app is None and replicas is None and (scorers, workflows) != (None, None):
                if scorers is not None:
                    stack.scale(scorers)
                if workflows is not None:
                    stack.scale_app(AppId.WORKFLOW, workflows)
            else:
                raise CliError("scale needs --scorers N and/or --workflows N, or --app APP_ID --replicas N",
                               EXIT_BAD_INPUT)
        elif action == "env":
            # For a shell of one's own: `eval "$(.venv/bin/taskfan stack env)"`; printed only when asked.
            if not app:  # the operator's shell: ingest's token, each app's sidecar token, Redis's password
                secrets = stack.secrets
                apps = sorted({instance.app_id for instance in stack.topology.instances(1)})
                sidecars = " ".join(f"DAPR_TOKEN_{app.upper().replace('-', '_')}={secrets.sidecar_token(app)}"
                                    for app in apps)
                print(f"export INGEST_TOKEN={secrets.ingest_token} CONSOLE_VIEW_TOKEN={secrets.console_view_token} "
                      f"{sidecars} REDISCLI_AUTH={secrets.redis_password}")
                return 0
            # An outside app: its grant only (its own sidecar's token, its resources), and an identity for this
            # app id in the stack's mTLS.
            try:
                grant, stored = stack.grant(app)
            except GrantError as exc:
                raise CliError(str(exc), EXIT_BAD_INPUT) from None
            print(f"export DAPR_API_TOKEN={stored['dapr-api-token']} TASKFAN_GRANT={grant.folder} "
                  f'DAPR_TRUST_ANCHORS="$(cat {stack.mtls.trust_anchors_file})" '
                  f"DAPR_SENTRY_TOKEN_FILE={stack.mtls.token_file(app)} SENTRY_ADDRESS={stack.sentry_address}")
        elif action == "restart":
            if every_app == bool(app):
                raise CliError("restart needs --app NAME (a process name from `stack status`, e.g. workflow) or "
                               "--all", EXIT_BAD_INPUT)
            if every_app:
                roll(stack)
                print("every app restarted and ready")
            else:
                restart(stack, app)
                print(f"{app} restarted and ready")
        else:
            rows = stack.status()
            for name, pid, alive in rows:
                print(f"{name:22} pid {pid:<8} {'running' if alive else 'STOPPED'}")
            if not rows:
                print("no stack is running")
            return 0 if rows and all(alive for *_, alive in rows) else EXIT_REFUSED
    except StackError as exc:
        raise CliError(str(exc), EXIT_REFUSED) from None
    return 0
