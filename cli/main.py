"""The `agentmem` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import warnings
from datetime import datetime
from pathlib import Path

from core.logging import configure_logging
from core.queue import queue_names
from core.settings import get_settings


def _cmd_up(args) -> int:
    from cli.up import run_up

    return run_up(args.port, args.workers, args.data_dir, as_json=args.json)


def _cmd_api(args) -> int:
    import uvicorn

    settings = get_settings()
    uvicorn.run("api.app:create_app", factory=True, host=args.host or settings.host, port=args.port or settings.port,
                log_config=None, access_log=False, timeout_graceful_shutdown=5, ws_ping_interval=None)
    return 0


def _cmd_worker(args) -> int:
    settings = get_settings()
    argv = [sys.executable, "-m", "dramatiq", "workers.main", "--processes", str(args.processes),
            "--threads", str(args.threads or settings.worker_threads), "--queues", *queue_names(),
            "--worker-shutdown-timeout", str(settings.worker_shutdown_timeout_ms)]
    # Dramatiq's `worker_timeout` (read from the environment) is how long each of its worker threads waits on
    # the in-process work queue before it checks for a shutdown: a put wakes it at once, so a long wait costs
    # no pickup latency (`worker_thread_wait_ms`), while 25 ms across 16 threads was 640 wake-ups a second (2-4%
    # of a core at rest).
    # The consumers poll on their own clock (`worker_poll_ms`, core/queue.py).
    env = dict(os.environ, dramatiq_worker_timeout=str(settings.worker_thread_wait_ms))
    # Idle torch threads sleep instead of spinning (OpenMP reads this once, as torch loads). Spinning
    # holds a core for nothing: on a busy 2-core machine embedding one text cost 307 ms of CPU
    # spinning and 41 ms sleeping, a batch of 16 56 and 24 ms a text; small jobs make many such calls.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.execve(sys.executable, argv, env)
    return 0  # not reached


def _cmd_scheduler(args) -> int:
    from workers.scheduler import maintain_once, run_scheduler

    if args.once:
        print(json.dumps(asyncio.run(maintain_once())))
        return 0

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_scheduler(stop)

    asyncio.run(main())
    return 0


def _cmd_migrate(args) -> int:
    from core.migrate import upgrade_database

    applied = upgrade_database()
    if args.json:
        print(json.dumps({"applied": applied}))
    elif applied:
        print(f"database schema upgraded to {applied[-1]} ({len(applied)} migration{'s' * (len(applied) > 1)})")
    else:
        print("database schema is up to date")
    return asyncio.run(_begin_dimension_switch(sys.stderr if args.json else sys.stdout))


async def _begin_dimension_switch(out) -> int:
    """With AGENTMEM_EMBEDDING_DIM changed, begin the switch of the vector columns (README "Switching embedding
    models") before the processes start: writes of the new dimension then have their column from the first."""
    from core import embedding_columns
    from core.db import dispose_engine
    from core.errors import PermanentJobError, TransientJobError
    from core.settings import get_settings

    dim = get_settings().embedding_dim
    try:
        if await embedding_columns.begin(dim):
            print(f"switching the embedding columns to {dim} dimensions: run `reembed` for each organization",
                  file=out)
    except (PermanentJobError, TransientJobError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        await dispose_engine()
    return 0


def _cmd_ingest(args) -> int:
    from cli.client import ingest_file

    return ingest_file(args.file, api_url=args.api_url, api_key=args.api_key, batch_size=args.batch_size,
                       wait=args.wait, as_json=args.json)


def _cmd_export(args) -> int:
    from cli.exports import export_to_file

    return export_to_file(args.output, api_url=args.api_url, api_key=args.api_key, scope=args.scope,
                          scope_id=args.scope_id, include=args.include, vectors=not args.no_vectors,
                          as_json=args.json)


def _cmd_import(args) -> int:
    from cli.exports import import_file

    return import_file(args.file, api_url=args.api_url, api_key=args.api_key, id_mode=args.id_mode,
                       as_json=args.json)


def _cmd_watch(args) -> int:
    from cli.client import watch_job

    return watch_job(args.job_id, api_url=args.api_url, api_key=args.api_key, org=args.org, as_json=args.json)


def _cmd_show(args) -> int:
    from cli.client import show_job

    return show_job(args.job_id, api_url=args.api_url, api_key=args.api_key, org=args.org,
                    cancel=args.jobs_command == "cancel", as_json=args.json)


def _cmd_maintenance(args) -> int:
    from cli.client import run_maintenance

    try:
        params = json.loads(args.params)
    except json.JSONDecodeError as exc:
        print(f"--params is not JSON: {exc}", file=sys.stderr)
        return 2
    if not isinstance(params, dict):
        print('--params must be a JSON object, such as \'{"batch_size": 100}\'', file=sys.stderr)
        return 2
    return run_maintenance(args.task, api_url=args.api_url, api_key=args.api_key, org=args.org, params=params,
                           wait=args.wait, as_json=args.json)


def _cmd_mcp(args) -> int:
    from cli.mcp_stdio import serve_stdio

    return serve_stdio(args.api_url, args.api_key)


def _cmd_admin(args) -> int:
    from cli import admin
    from schemas.permissions import Permission, Role

    if args.admin_command == "create-org":
        return admin.run(lambda: admin.create_org(args.name, args.owner))
    if args.admin_command == "create-key":
        scopes = [Permission(s) for s in args.scope] if args.scope else None
        return admin.run(lambda: admin.create_key(args.org, args.name, Role(args.role), scopes, args.expires_at))
    if args.admin_command == "create-user":
        password = admin.read_password(args.password)
        return admin.run(lambda: admin.create_user(args.username, args.email, password, args.superuser))
    return admin.run(lambda: admin.bootstrap(args.org))


class _Subparsers:
    """`add_subparsers()` whose every command also takes the common options (`--json`)."""

    def __init__(self, action, common: argparse.ArgumentParser) -> None:
        self.action, self.common = action, common

    def add_parser(self, name: str, **kwargs) -> argparse.ArgumentParser:
        return self.action.add_parser(name, parents=[self.common], **kwargs)


def build_parser() -> argparse.ArgumentParser:
    settings = get_settings()
    default_api = settings.api_url or f"http://{settings.host}:{settings.port}"
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    parser = argparse.ArgumentParser(prog="agentmem", description="Long-term memory for AI agents.")
    # Every command takes --json: client commands print JSON instead of text (and no progress bars), the
    # services log JSON lines, `up` announces itself as one JSON object.
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a nested command's parser must not reset what `agentmem jobs --json watch …` set.
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable output (JSON) instead of text")
    parser.set_defaults(json=False)
    sub = _Subparsers(parser.add_subparsers(dest="command", required=True), common)

    up = sub.add_parser("up", help="run everything: embedded servers (unless URLs are set), API, workers, scheduler")
    up.add_argument("--port", type=int, default=settings.port)
    up.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    up.add_argument("--data-dir", type=Path, default=None, help=f"data directory (default {settings.data_dir})")
    up.set_defaults(func=_cmd_up)

    api = sub.add_parser("api", help="run the HTTP API")
    api.add_argument("--host", default=None)
    api.add_argument("--port", type=int, default=None)
    api.set_defaults(func=_cmd_api)

    worker = sub.add_parser("worker", help="run a Dramatiq worker")
    worker.add_argument("--processes", type=int, default=1)
    worker.add_argument("--threads", type=int, default=None)
    worker.set_defaults(func=_cmd_worker)

    scheduler = sub.add_parser("scheduler", help="run the maintenance scheduler")
    scheduler.add_argument("--once", action="store_true", help="run one maintenance pass, print what it did, exit")
    scheduler.set_defaults(func=_cmd_scheduler)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=_cmd_migrate)

    ingest = sub.add_parser("ingest", help="submit a JSONL file of memories (resumable)")
    ingest.add_argument("file", type=Path, help='JSON lines: {"content": ..., "metadata": {...}, "user_id": ...}')
    ingest.add_argument("--api-url", default=default_api)
    ingest.add_argument("--api-key", default=api_key, help="API key (default: $AGENTMEM_API_KEY)")
    ingest.add_argument("--batch-size", type=int, default=1000, help="memories per request (max 10000)")
    ingest.add_argument("--wait", action="store_true", help="wait until every job has finished")
    ingest.set_defaults(func=_cmd_ingest)

    export = sub.add_parser("export", help="export a scope to an archive file (waits, downloads, checks its sha256)")
    export.add_argument("-o", "--output", type=Path, required=True, help="the archive to write (.tar.gz)")
    export.add_argument("--scope", default="organization", choices=["organization", "user", "agent"])
    export.add_argument("--scope-id", default=None, help="the user's or agent's id (with --scope user|agent)")
    export.add_argument("--include", action="append", choices=["memories", "history", "blocks", "agents", "tools",
                                                               "conversations"],
                        help="a kind of rows to include (repeatable; default: all)")
    export.add_argument("--no-vectors", action="store_true", help="leave embeddings out (an import embeds again)")
    export.add_argument("--api-url", default=default_api)
    export.add_argument("--api-key", default=api_key, help="API key (default: $AGENTMEM_API_KEY)")
    export.set_defaults(func=_cmd_export)

    imp = sub.add_parser("import", help="import an archive made by `agentmem export` (uploads, follows the job)")
    imp.add_argument("file", type=Path)
    imp.add_argument("--id-mode", default="remap", choices=["remap", "keep"],
                     help="remap (default): new ids, a second import changes nothing; keep: the archive's ids")
    imp.add_argument("--api-url", default=default_api)
    imp.add_argument("--api-key", default=api_key, help="API key (default: $AGENTMEM_API_KEY)")
    imp.set_defaults(func=_cmd_import)

    jobs = sub.add_parser("jobs", help="work with jobs")
    jobs_sub = _Subparsers(jobs.add_subparsers(dest="jobs_command", required=True), common)
    watch = jobs_sub.add_parser("watch", help="follow a job's progress live")
    watch.add_argument("job_id")
    watch.add_argument("--api-url", default=default_api)
    watch.add_argument("--api-key", default=api_key, help="API key (default: $AGENTMEM_API_KEY)")
    watch.add_argument("--org", default=None,
                       help="the organization to act for (its id; default: the key's or token's)")
    watch.set_defaults(func=_cmd_watch)
    for name, purpose in (("show", "print a job's state, progress, result or error"),
                          ("cancel", "cancel a job (a running one stops at its next checkpoint)")):
        command = jobs_sub.add_parser(name, help=purpose)
        command.add_argument("job_id")
        command.add_argument("--api-url", default=default_api)
        command.add_argument("--api-key", default=api_key, help="API key (default: $AGENTMEM_API_KEY)")
        command.add_argument("--org", default=None, help="the organization to act for (its id)")
        command.set_defaults(func=_cmd_show)

    maintenance = sub.add_parser("maintenance", help="run maintenance tasks")
    maintenance_sub = _Subparsers(maintenance.add_subparsers(dest="maintenance_command", required=True), common)
    run = maintenance_sub.add_parser("run", help="run a maintenance task now as a job (admins and owners)")
    run.add_argument("task", help="integrity, retention, sweep_blocks, summarize_conversations, vacuum (superusers)…")
    run.add_argument("--org", default=None, help="the organization to act for (its id; default: the key's or token's)")
    run.add_argument("--params", default="{}", help="the task's parameters as a JSON object")
    run.add_argument("--wait", action="store_true", help="follow the job with a progress bar until it ends")
    run.add_argument("--api-url", default=default_api)
    run.add_argument("--api-key", default=api_key, help="API key or access token (default: $AGENTMEM_API_KEY)")
    run.set_defaults(func=_cmd_maintenance)

    mcp = sub.add_parser("mcp", help="serve AgentMem's MCP tools over stdio (for desktop clients)")
    mcp.add_argument("--api-url", default=default_api, help=f"the API (default: {default_api})")
    mcp.add_argument("--api-key", default=api_key, help="API key (default: $AGENTMEM_API_KEY)")
    mcp.set_defaults(func=_cmd_mcp)

    admin = sub.add_parser("admin", help="create organizations, users and API keys (talks to the database)")
    admin_sub = _Subparsers(admin.add_subparsers(dest="admin_command", required=True), common)
    org = admin_sub.add_parser("create-org", help="create an organization")
    org.add_argument("name")
    org.add_argument("--owner", help="username of an existing account to make its owner")
    key = admin_sub.add_parser("create-key", help="create an API key and print it once")
    key.add_argument("--org", default=settings.bootstrap_org_name, help="organization name")
    key.add_argument("--name", default="cli key", help="what the key is for")
    key.add_argument("--role", default="owner", choices=["owner", "admin", "member", "viewer"])
    key.add_argument("--scope", action="append", help="narrow to a permission (repeatable), e.g. memories:read")
    key.add_argument("--expires-at", type=datetime.fromisoformat, default=None, help="ISO date-time")
    user = admin_sub.add_parser("create-user", help="create an account")
    user.add_argument("username")
    user.add_argument("--email")
    user.add_argument("--password", help="(default: asked on the terminal)")
    user.add_argument("--superuser", action="store_true", help="a service administrator")
    boot = admin_sub.add_parser("bootstrap", help="ensure the organization exists; print an owner key the first time")
    boot.add_argument("--org", default=settings.bootstrap_org_name)
    admin.set_defaults(func=_cmd_admin)
    return parser


def main(argv: list[str] | None = None) -> None:
    # platformdirs warns once per process where XDG_RUNTIME_DIR is unset (servers, containers): harmless here.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    args = build_parser().parse_args(argv)
    settings = get_settings()
    # `mcp` logs plain lines to stderr too (its stdout is the protocol): a desktop client shows them as they are.
    interactive = args.command in ("up", "ingest", "export", "import", "jobs", "migrate", "admin", "mcp", "maintenance")
    configure_logging(settings.log_level, json_lines=args.json or (settings.log_json and not interactive),
                      process=args.command)
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
