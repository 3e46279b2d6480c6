"""The `agentmem` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from core.logging import configure_logging
from core.settings import get_settings


def _cmd_up(args) -> int:
    from cli.up import run_up

    return run_up(args.port, args.workers, args.data_dir)


def _cmd_api(args) -> int:
    import uvicorn

    settings = get_settings()
    uvicorn.run("api.app:create_app", factory=True, host=args.host or settings.host, port=args.port or settings.port,
                log_config=None, access_log=False, timeout_graceful_shutdown=5, ws_ping_interval=None)
    return 0


def _cmd_worker(args) -> int:
    settings = get_settings()
    argv = [sys.executable, "-m", "dramatiq", "workers.main", "--processes", str(args.processes),
            "--threads", str(args.threads or settings.worker_threads), "--queues", "embedding",
            "--worker-shutdown-timeout", str(settings.worker_shutdown_timeout_ms)]
    # Dramatiq reads its idle poll ceiling from the environment (default 1 s): keep pickup latency low.
    env = dict(os.environ, dramatiq_worker_timeout=str(settings.worker_poll_ms))
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

    upgrade_database()
    print("database is at the latest schema")
    return 0


def _cmd_ingest(args) -> int:
    from cli.client import ingest_file

    return ingest_file(args.file, api_url=args.api_url, batch_size=args.batch_size, wait=args.wait)


def _cmd_watch(args) -> int:
    from cli.client import watch_job

    return watch_job(args.job_id, api_url=args.api_url)


def build_parser() -> argparse.ArgumentParser:
    settings = get_settings()
    default_api = f"http://{settings.host}:{settings.port}"
    parser = argparse.ArgumentParser(prog="agentmem", description="Long-term memory for AI agents.")
    sub = parser.add_subparsers(dest="command", required=True)

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
    ingest.add_argument("--batch-size", type=int, default=1000, help="memories per request (max 10000)")
    ingest.add_argument("--wait", action="store_true", help="wait until every job has finished")
    ingest.set_defaults(func=_cmd_ingest)

    jobs = sub.add_parser("jobs", help="work with jobs")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True)
    watch = jobs_sub.add_parser("watch", help="follow a job's progress live")
    watch.add_argument("job_id")
    watch.add_argument("--api-url", default=default_api)
    watch.set_defaults(func=_cmd_watch)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    settings = get_settings()
    interactive = args.command in ("up", "ingest", "jobs", "migrate")
    configure_logging(settings.log_level, json_lines=settings.log_json and not interactive, process=args.command)
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
