"""Shared benchmark parts: run `agentmem up` as a subprocess, a deterministic corpus, following jobs, tables.

Every wait here has a deadline: a benchmark that hangs measures nothing.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from agentmem.sse import aevents

REPO = Path(__file__).resolve().parent.parent
LONGMEMEVAL = Path("/work/shared/data/longmemeval_s_dev60.json.gz")
TERMINAL = {"succeeded", "failed", "cancelled"}
NUMBER = re.compile(r"^-?[\d.,]+%?$")
PROBLEM_LINE = re.compile(r'"level": "(warning|error|critical)"|\b(WARNING|ERROR|CRITICAL)\b|Traceback')


class BenchError(Exception):
    """A benchmark cannot give a valid figure (a failed job, a timeout, a wrong count)."""


# --- client-side cases on an embedded PostgreSQL alone (no `agentmem up`) ---------------------------

def measure_tree(script: Path, tree: Path, database_url: str, n: int, timeout: float = 1800) -> dict[str, list]:
    """`script --child DATABASE_URL --n N` in a child process on the code of the checkout `tree`: the figures
    it prints as JSON on its last line."""
    out = subprocess.run([sys.executable, str(script), "--child", database_url, "--n", str(n)], cwd=tree,
                         env=dict(os.environ, PYTHONPATH=str(tree)), capture_output=True, text=True,
                         timeout=timeout, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def rounds_on_embedded_postgres(script: Path, prefix: str, n: int, rounds: int,
                                compare_tree: Path | None) -> list[tuple[str, int, dict[str, list]]]:
    """Start an embedded PostgreSQL of its own (data under /tmp, not /root), migrate it, and run `script`'s
    child on this checkout and, alternately per round, on `compare_tree`'s: (side, round, figures)."""
    from core.db import set_database_url
    from core.migrate import upgrade_database
    from core.servers import EmbeddedPostgres

    postgres = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp")))
    url = postgres.start()
    try:
        os.environ["AGENTMEM_DATABASE_URL"] = url
        set_database_url(url)
        upgrade_database()
        out = []
        for round_ in range(1, rounds + 1):
            out.append(("this", round_, measure_tree(script, REPO, url, n)))
            if compare_tree:
                out.append((f"compared ({compare_tree})", round_, measure_tree(script, compare_tree, url, n)))
        return out
    finally:
        postgres.stop()


# --- the system under test -------------------------------------------------------------------------

def run_child_json(cmd: list[str], what: str, timeout: float) -> dict:
    """Run a benchmark's child process, which writes its figures as JSON to the path `cmd` ends with; read them.

    `cmd`'s last element is replaced by a fresh temporary file; `what` names the run in errors.
    """
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = Path(fh.name)
    env = dict(os.environ, HF_HUB_DISABLE_PROGRESS_BARS="1", TRANSFORMERS_VERBOSITY="error", TQDM_DISABLE="1")
    try:
        subprocess.run([*cmd, str(out)], check=True, timeout=timeout, env=env)
        return json.loads(out.read_text())
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{what} did not finish within {timeout:.0f} s") from exc
    except subprocess.CalledProcessError as exc:
        raise BenchError(f"{what} failed with exit code {exc.returncode}") from exc
    finally:
        out.unlink(missing_ok=True)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class System:
    """`agentmem up` on a fresh temporary data dir and a free port; its output goes to `log_path`."""

    workers: int = 2
    ready_timeout: float = 240.0
    keep_data: bool = False
    port: int = field(default_factory=free_port)
    data_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="agentmem-bench-", dir="/tmp")))
    process: subprocess.Popen | None = None
    api_key: str = ""
    env: dict[str, str] = field(default_factory=dict)  # AGENTMEM_* settings for this run, over the defaults below
    repo: Path = REPO  # the checkout whose code the system runs (another one: a same-run baseline of old code)

    @classmethod
    def on(cls, data_dir: Path | None, workers: int, keep_data: bool = False) -> System:
        """A system on a fresh temporary data dir, or on `data_dir` (created if need be, always kept:
        a benchmark run again on it reuses what the last run stored)."""
        if data_dir is None:
            return cls(workers=workers, keep_data=keep_data)
        data_dir.mkdir(parents=True, exist_ok=True)
        return cls(workers=workers, keep_data=True, data_dir=data_dir)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "agentmem-up.log"

    def start(self) -> None:
        """Start the system and return once /readyz answers 200 (or raise BenchError)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTMEM_")}
        env.update(AGENTMEM_HOST="127.0.0.1", AGENTMEM_PORT=str(self.port), PYTHONUNBUFFERED="1")
        # Benchmarks measure throughput and latency, not the guard rails: lift quotas and rate limits.
        env.update(AGENTMEM_QUOTA_CONCURRENT_JOBS="1000000", AGENTMEM_QUOTA_JOBS_PER_MINUTE="1000000",
                   AGENTMEM_QUOTA_MAX_MEMORIES="100000000",  # the default (a million) is what search_latency seeds
                   AGENTMEM_RATE_LIMIT_OWNER="10000000", AGENTMEM_RATE_LIMIT_ADMIN="10000000",
                   AGENTMEM_RATE_LIMIT_MEMBER="10000000", AGENTMEM_RATE_LIMIT_VIEWER="10000000")
        env.update(self.env)
        if self.repo != REPO:
            env["PYTHONPATH"] = str(self.repo)
        agentmem = shutil.which("agentmem", path=str(Path(sys.executable).parent)) or "agentmem"
        cmd = [agentmem, "up", "--data-dir", str(self.data_dir), "--port", str(self.port),
               "--workers", str(self.workers)]
        print(f"starting: {shlex.join(cmd)}  (log: {self.log_path})", flush=True)
        # 0600: the log holds the owner key `agentmem up` prints.
        log = os.fdopen(os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")
        # Own session: a Ctrl-C on the benchmark reaches the system only through stop(), once.
        self.process = subprocess.Popen(cmd, cwd=self.repo, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        started = time.monotonic()
        deadline = started + self.ready_timeout
        with httpx.Client(timeout=3) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise BenchError(f"agentmem up exited with {self.process.returncode} before ready:\n{self.tail()}")
                try:
                    if client.get(self.url + "/readyz").status_code == 200 and self._read_key():
                        print(f"system ready at {self.url} after {time.monotonic() - started:.1f} s", flush=True)
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.5)
        raise BenchError(f"agentmem up not ready after {self.ready_timeout:.0f} s:\n{self.tail()}")

    def _read_key(self) -> bool:
        """Pick up the owner API key `agentmem up` prints once it is ready (kept in the data dir, because a
        restart on a kept data dir prints none)."""
        saved = self.data_dir / "bench-api-key"
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.strip().startswith("Key:"):
                self.api_key = line.split()[1]
                saved.write_text(self.api_key)
                saved.chmod(0o600)
                return True
        if saved.exists():
            self.api_key = saved.read_text().strip()
            return True
        return False

    @property
    def headers(self) -> dict[str, str]:
        """Credentials for the API."""
        return {"Authorization": f"Bearer {self.api_key}"}

    def stop(self, timeout: float = 60.0) -> None:
        """SIGINT, as Ctrl-C would; SIGKILL only if it has not stopped by the deadline."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"agentmem up did not stop within {timeout:.0f} s of SIGINT; killing it "
                  f"(its children may survive)", file=sys.stderr, flush=True)
            self.process.kill()
            self.process.wait(timeout=10)

    def tail(self, lines: int = 40) -> str:
        """The last lines of the system's output."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def problems(self) -> list[str]:
        """Warning, error and traceback lines the system logged."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        return [line for line in lines if PROBLEM_LINE.search(line)]

    def model_loads(self) -> int:
        """How many processes have logged loading the embedding model (the API and each worker do it once)."""
        try:
            return self.log_path.read_text(errors="replace").count("loaded embedding model")
        except OSError:
            return 0

    def cleanup(self, failed: bool) -> None:
        """Delete the data dir unless asked to keep it or the run failed (then its log is evidence)."""
        if failed or self.keep_data:
            print(f"data dir kept: {self.data_dir} (log: {self.log_path})")
        else:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def report_problems(system: System, limit: int = 15) -> None:
    """Print what the system logged at warning level or above, so a 'fast' run with errors is visible."""
    lines = system.problems()
    print(f"\nsystem log: {len(lines)} warning/error line(s) in {system.log_path}")
    for line in lines[:limit]:
        print("  " + line[:400])
    if len(lines) > limit:
        print(f"  ... {len(lines) - limit} more")


# --- corpus ----------------------------------------------------------------------------------------

FIRST = ("Alice Bob Carmen Dmitri Elena Farid Grace Hiroshi Ines Jamal Keiko Liam Maya Nikolai Olga Pedro Quinn "
         "Rosa Samir Tara Umar Vera Wen Ximena Yusuf Zoe Anders Beatriz Chidi Dana Emil Fatima Goran Hana Ivan "
         "Jasmine Kofi Lena Mateo Nadia Oscar Priya Rafael Sofia Tomas Uma Viktor Wanda Yara Zeynep").split()
LAST = ("Abbott Baker Chen Diaz Eriksen Fischer Garcia Haddad Ito Jensen Kowalski Lopez Moreau Novak Okafor Patel "
        "Quist Rossi Silva Tanaka Ueda Varga Weber Xu Yilmaz Zhang Andersen Bianchi Costa Dubois").split()
CITIES = ("Lisbon Osaka Nairobi Toronto Krakow Valparaiso Hanoi Tbilisi Reykjavik Marseille Austin Bergen Cusco "
          "Dakar Edinburgh Fukuoka Graz Hobart Izmir Jaipur Kigali Leipzig Medellin Nantes Oaxaca Porto Quebec "
          "Riga Seville Tallinn").split()
FOODS = ["ramen", "paella", "pad thai", "sourdough bread", "dark chocolate", "lentil soup", "sushi", "tacos al pastor",
         "mushroom risotto", "green curry", "falafel", "pierogi", "dumplings", "ceviche", "pho", "shakshuka",
         "blueberry pancakes", "spicy tofu", "grilled halloumi", "banana bread"]
HOBBIES = ["rock climbing", "playing the cello", "birdwatching", "trail running", "knitting", "chess", "pottery",
           "salsa dancing", "astrophotography", "sea kayaking", "woodworking", "learning Japanese", "baking bread",
           "restoring old bicycles", "urban sketching", "beekeeping", "bouldering", "writing short stories"]
JOBS = ["a nurse", "a data engineer", "a high school teacher", "an architect", "a veterinarian", "a sous chef",
        "a product manager", "a civil engineer", "a pharmacist", "a carpenter", "a UX researcher", "a journalist",
        "a pilot", "a physiotherapist", "an accountant", "a marine biologist"]
PETS = ["a grey cat named Pixel", "a beagle called Max", "two goldfish", "a rescue greyhound", "a parrot named Kiwi",
        "an old tabby cat", "a corgi puppy", "a pair of rabbits"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
REASONS = ["because it helps them unwind after work", "since their doctor suggested it last spring",
           "after a friend recommended it during a long road trip", "which they picked up while living abroad",
           "mostly on weekends when the weather is good", "and they want to get better at it this year",
           "although they rarely find enough time for it", "ever since they moved into the new apartment"]
TEMPLATES = [
    "{name} prefers {food} over {food2}.",
    "{name} lives in {city} and works as {job}.",
    "{name} has been into {hobby} for {n} years {reason}.",
    "{name} is allergic to peanuts and avoids {food} when eating out in {city}.",
    "{name} moved from {city} to {city2} in {month} {year} to start a new job as {job}.",
    "{name} has {pet}.",
    "{name}'s favourite weekend activity is {hobby}, usually on {day} mornings near {city}.",
    "{name} mentioned that their sister {name2} is visiting {city} in {month} and wants to try {food} there.",
    "Remind {name} about the dentist appointment on {day} at {hour} o'clock.",
    "{name} usually drinks {n} cups of coffee a day but switches to green tea on {day}s.",
    "{name} and {name2} met at a {hobby} class in {city} back in {year} and have been friends ever since.",
    "{name} is saving money for a trip to {city} next {month} and plans to stay for {n} nights.",
    "{name} dislikes crowded places, so they go {hobby} early on {day} before the trails get busy.",
    "{name} said the best {food} they ever had was at a small family restaurant in {city} during a rainy week "
    "in {month}.",
    "{name} works remotely as {job} for a company based in {city} and travels there about {n} times a year.",
    "{name} wants to learn {hobby} {reason}, and asked for beginner tips.",
    "{name}'s birthday is on {month} {dom}, and they like {food} more than birthday cake.",
    "{name} recently adopted {pet} and is looking for a quiet neighbourhood in {city} with a park nearby.",
    "{name} is training for a half marathon in {city} in {month} {year} and runs {n} times a week.",
    "{name} keeps a vegetable garden with tomatoes, basil and peppers, and cooks {food} with the harvest every {day}.",
    "{name} asked to be reminded that the rent of the flat in {city} is due on the {dom}th of every month.",
    "{name} prefers window seats on flights, hates layovers longer than {n} hours, and always packs snacks "
    "like {food}.",
    "{name} grew up in {city}, studied in {city2}, and now works as {job}, {reason}.",
    "{name} is reading a long history of {city} and finds the chapters about the {year_century}th century "
    "the most interesting.",
    "{name} told me that when they were a student in {city} they lived above a bakery, ate {food} almost every "
    "day, spent their evenings on {hobby}, and still miss the smell of fresh bread in the morning.",
    "For the family reunion in {month}, {name} offered to cook {food} for about {n} people, while {name2} will "
    "bring dessert, book the train tickets to {city2}, and find a hotel close to the station.",
    "{name} is planning to change careers from {job} to {job2} within the next {n} years, is taking evening "
    "classes in {city} twice a week, and asked for advice on building a portfolio.",
    "{name} does not eat meat on weekdays, cooks {food} or {food2} at home most evenings, and only orders "
    "takeaway on {day} nights when they come home late from {hobby}.",
]


def synthetic_corpus(n: int, seed: int = 7) -> list[str]:
    """`n` distinct facts about people, places and preferences (8 to 40 words), the same for a given seed."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[str] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > n * 50 + 1000:
            raise BenchError(f"could not generate {n} distinct sentences")
        name, name2 = (f"{rng.choice(FIRST)} {rng.choice(LAST)}" for _ in range(2))
        city, city2 = rng.sample(CITIES, 2)
        food, food2 = rng.sample(FOODS, 2)
        text = rng.choice(TEMPLATES).format(
            name=name, name2=name2, city=city, city2=city2, food=food, food2=food2, hobby=rng.choice(HOBBIES),
            job=rng.choice(JOBS), job2=rng.choice(JOBS), pet=rng.choice(PETS), day=rng.choice(DAYS),
            month=rng.choice(MONTHS),
            year=rng.randint(1998, 2024), n=rng.randint(2, 12), hour=rng.randint(8, 17), dom=rng.randint(1, 28),
            reason=rng.choice(REASONS), year_century=rng.randint(12, 19))
        if not 8 <= len(text.split()) <= 40 or text in seen:
            continue
        seen.add(text)
        out.append(text)
    return out


def longmemeval_corpus(n: int, max_chars: int = 1000) -> list[str]:
    """The first `n` distinct conversation turns of the LongMemEval dev set, each cut to `max_chars`."""
    with gzip.open(LONGMEMEVAL, "rt", encoding="utf-8") as fh:
        records = json.load(fh)
    seen: set[str] = set()
    out: list[str] = []
    for record in records:
        for session in record["haystack_sessions"]:
            for turn in session:
                text = turn["content"].strip()[:max_chars]
                if text.strip() and text not in seen:
                    seen.add(text)
                    out.append(text)
                    if len(out) == n:
                        return out
    raise BenchError(f"the LongMemEval file has only {len(out)} distinct turns; asked for {n}")


def corpus(kind: str, n: int, seed: int = 7) -> list[str]:
    """`n` texts of the named corpus: `synthetic` or `longmemeval`."""
    return synthetic_corpus(n, seed) if kind == "synthetic" else longmemeval_corpus(n)


# --- jobs ------------------------------------------------------------------------------------------

async def fetch_jobs(client: httpx.AsyncClient, job_ids: Iterable[str], concurrency: int = 8) -> dict[str, dict]:
    """The rows of the given jobs, fetched with bounded concurrency; a `429` (a run under default rate limits
    reads thousands of jobs) is waited out as its `Retry-After` says."""
    gate = asyncio.Semaphore(concurrency)
    out: dict[str, dict] = {}

    async def one(job_id: str) -> None:
        async with gate:
            for _ in range(30):
                response = await client.get(f"/api/v1/jobs/{job_id}")
                if response.status_code != 429:
                    break
                await asyncio.sleep(float(response.headers.get("retry-after") or 1))
            response.raise_for_status()
            out[job_id] = response.json()

    await asyncio.gather(*(one(j) for j in job_ids))
    return out


class JobWatcher:
    """Follows the organization's event stream and notes when each job reaches a terminal state.

    Events are hints: if the stream is quiet for `quiet_poll` seconds while jobs are still pending,
    their rows are read instead, so a lost event costs a few seconds, never a hang.
    """

    def __init__(self, client: httpx.AsyncClient, quiet_poll: float = 5.0) -> None:
        self.client = client
        self.quiet_poll = quiet_poll
        self.finished: dict[str, tuple[str, float]] = {}  # job id -> (status, time.monotonic() seen)
        self._changed = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.stream_error: BaseException | None = None

    async def __aenter__(self) -> JobWatcher:
        self._task = asyncio.create_task(self._follow())
        # The server reads the stream position as it handles the GET; give it a moment before the caller
        # submits. A missed `queued` event does not matter; terminal events come long after.
        await asyncio.sleep(0.5)
        return self

    async def __aexit__(self, *exc) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    async def _follow(self) -> None:
        try:
            async with self.client.stream("GET", "/api/v1/events", timeout=httpx.Timeout(10, read=None)) as response:
                response.raise_for_status()
                async for sse in aevents(response):
                    if sse.event in TERMINAL:
                        job_id = sse.json()["job_id"]
                        self.finished.setdefault(job_id, (sse.event, time.monotonic()))
                        self._changed.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the row polling below still finishes the wait
            self.stream_error = exc

    async def wait(self, job_ids: Sequence[str], deadline: float, fail_fast: bool = True) -> float:
        """Wait until every job is terminal; returns time.monotonic() when the last one was seen."""
        pending = set(job_ids) - set(self.finished)
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"timed out: {len(pending)} of {len(job_ids)} jobs not finished")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=min(self.quiet_poll, remaining))
            except TimeoutError:
                rows = await fetch_jobs(self.client, pending)
                now = time.monotonic()
                for job_id, row in rows.items():
                    if row["status"] in TERMINAL:
                        self.finished.setdefault(job_id, (row["status"], now))
            pending = set(job_ids) - set(self.finished)
            if fail_fast:
                bad = [(j, self.finished[j][0]) for j in job_ids
                       if j in self.finished and self.finished[j][0] != "succeeded"]
                if bad:
                    raise BenchError(f"{len(bad)} job(s) did not succeed, e.g. {bad[0][0]}: {bad[0][1]}")
        return max(self.finished[j][1] for j in job_ids)


async def warm_up(system: System, timeout: float = 180.0) -> float:
    """Wait until every worker process and the API have loaded the embedding model.

    Workers load it before they take any message and the API loads it in the background at
    startup, so this only waits for the log to show one load per process: the figures are for a
    warm system, and no benchmark data is submitted before the clock starts.
    """
    t0 = time.monotonic()
    deadline = t0 + timeout
    target = system.workers + 1  # the API process loads the model too, for search queries
    while system.model_loads() < target and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
    loads = system.model_loads()
    if loads < target:
        print(f"WARNING: after {timeout:.0f} s only {loads} of {target} processes have loaded the model; "
              "figures include model loading", file=sys.stderr, flush=True)
    return time.monotonic() - t0


# --- figures ---------------------------------------------------------------------------------------

def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain text table; cells that read as numbers are right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def fmt(row: list[str], header: bool) -> str:
        parts = [c.rjust(w) if not header and NUMBER.match(c) else c.ljust(w)
                 for c, w in zip(row, widths, strict=False)]
        return "  ".join(parts).rstrip()

    lines = [fmt(cells[0], True), "  ".join("-" * w for w in widths)]
    lines += [fmt(row, False) for row in cells[1:]]
    return "\n".join(lines)


def machine_load(warn_above: float = 1.0) -> str:
    """The load average, with a warning when other work is already using the CPU (figures will be low)."""
    one, five, fifteen = os.getloadavg()
    note = f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"
    if one > warn_above:
        note += " -- WARNING: the machine is busy with other work; throughput and latency figures will suffer"
    return note


def command_line() -> str:
    """How this script was run, to paste next to its figures."""
    return shlex.join([Path(sys.executable).name, *sys.argv])


def setting(items: list[str]) -> dict[str, str]:
    """`AGENTMEM_X=Y` arguments as a dict of settings."""
    return dict(item.split("=", 1) for item in items)


def run_against(system: System, work) -> tuple[object, bool]:
    """Start the system, wait for warm workers, run `work()`, always stop it; (result, failed)."""
    try:
        system.start()
        print(f"warm-up (until every worker has loaded its model): {asyncio.run(warm_up(system)):.1f} s", flush=True)
        return work(), False
    except BenchError as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
    except Exception:  # an unexpected answer or a transport error: still stop the system, still exit 1
        traceback.print_exc()
        print("\nFAILED: unexpected error (above)", file=sys.stderr)
    finally:
        system.stop()
        report_problems(system)
    return None, True


def run_against_all(systems: Sequence[System], work) -> tuple[object, bool]:
    """`run_against` for systems run side by side (a same-run comparison): start each, wait for each to be
    warm, run `work()`, always stop them all; (result, failed)."""
    try:
        for system in systems:
            system.start()
            print(f"warm-up: {asyncio.run(warm_up(system)):.1f} s", flush=True)
        return work(), False
    except BenchError as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
    except Exception:
        traceback.print_exc()
        print("\nFAILED: unexpected error (above)", file=sys.stderr)
    finally:
        for system in systems:
            system.stop()
            report_problems(system)
    return None, True


def finish_run(system: System, failed: bool, problems: Sequence[str]) -> int:
    """Print the closing lines every benchmark prints, clean up, and give the exit status."""
    print(f"\nafter: {machine_load(warn_above=float('inf'))}")
    print(f"command: {command_line()}")
    system.cleanup(failed or bool(problems))
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if failed or problems else 0
