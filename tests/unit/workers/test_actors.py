"""workers/actors.py: one actor per job kind, each with explicit retry and time limits that defer to the job row."""

from __future__ import annotations

import uuid

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from core import queue
from core.settings import get_settings
from schemas.enums import JobKind
from schemas.tables import Job
from workers import actors


def test_actors_cover_every_job_kind():
    assert set(actors.ACTORS) == set(JobKind)


@pytest.mark.parametrize("kind", list(JobKind))
def test_actor_name_is_the_job_kind(kind):
    # Actor names are wire format and share the pipeline's name (STYLE 5 and 9).
    assert actors.ACTORS[kind].actor_name == kind.value


@pytest.mark.parametrize("kind", list(JobKind))
def test_every_actor_sets_max_retries_and_time_limit_explicitly(kind):
    options = actors.ACTORS[kind].options
    assert "max_retries" in options
    assert "time_limit" in options
    assert isinstance(options["max_retries"], int) and options["max_retries"] >= 0
    assert isinstance(options["time_limit"], int) and options["time_limit"] > 0


@pytest.mark.parametrize("kind", list(JobKind))
def test_broker_retries_outlast_the_job_rows_attempts(kind):
    # The row, not Dramatiq, decides when a job failed for good: the broker must deliver at least
    # as many times as the row allows attempts (job_max_retries + 1).
    deliveries = actors.ACTORS[kind].options["max_retries"] + 1
    assert deliveries > get_settings().job_max_retries + 1


@pytest.mark.parametrize("kind", list(JobKind))
def test_actor_time_limit_is_a_backstop_behind_the_jobs_own_timeout(kind):
    assert actors.ACTORS[kind].options["time_limit"] > get_settings().job_time_limit_seconds * 1000


@pytest.mark.parametrize("kind", list(JobKind))
def test_each_actor_listens_where_senders_address_it(kind):
    # Senders (core.queue) never import the actors: names and queues must agree by the table.
    assert actors.ACTORS[kind].queue_name == queue.QUEUES[kind]
    assert queue.job_message(kind, uuid.uuid4()).actor_name == actors.ACTORS[kind].actor_name


def test_send_enqueues_the_job_id_as_message_id_and_only_argument(monkeypatch):
    stub = StubBroker()
    stub.declare_queue(queue.QUEUES[JobKind.EMBED_MEMORY])
    monkeypatch.setattr(queue, "get_broker", lambda: stub)
    job = Job(id=uuid.uuid4(), org_id=uuid.uuid4(), kind=JobKind.EMBED_MEMORY.value)

    queue.send(job.kind, job.id)

    [encoded] = list(stub.queues[queue.QUEUES[JobKind.EMBED_MEMORY]].queue)
    message = dramatiq.Message.decode(encoded)
    assert message.message_id == str(job.id)
    assert message.actor_name == "embed_memory"
    assert list(message.args) == [str(job.id)]
