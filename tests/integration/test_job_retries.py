"""Every job, not only a command's, is retried when its error says and not when it says
retrying cannot help (``jobs.runtime.worker.MeshbotWorker``): an alert's post that Slack
rate-limits waits for Slack's ``Retry-After``, and an alert no retry can deliver fails at once,
said once in the log, instead of five more times over 31 s."""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from jobs.adapters.alert_threads import AlertThreads
from jobs.runtime import api, context
from tests.fixtures.meshbot import CONTRACT_POLICY, Mesh

GROUP_KEY = '{}/{severity="page"}:{alertname="CanaryErrorRate"}'


def notification(service: str) -> tuple[dict[str, Any], str]:
    alert = {
        "status": "firing",
        "labels": {"alertname": "CanaryErrorRate", "severity": "page",
                   "destination_service_name": service},
        "annotations": {"summary": f"{service} is failing its SLO"},
        "startsAt": "2024-05-01T10:00:00.000Z", "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": hashlib.sha256(service.encode()).hexdigest()[:16],
    }
    payload = {"version": "4", "groupKey": GROUP_KEY, "status": "firing", "receiver": "meshbot",
               "alerts": [alert]}
    return payload, hashlib.sha256(f"{service}-{time.time_ns()}".encode()).hexdigest()


def alert_job(mesh: Mesh, service: str) -> str:
    payload, digest = notification(service)
    assert api.submit_alert(mesh.redis, payload, digest)
    return "alert-" + digest[:32]


def queue(mesh: Mesh) -> Queue:
    return Queue("meshbot", connection=mesh.redis, serializer=JSONSerializer)


def about(caplog: pytest.LogCaptureFixture, job_id: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.levelno >= logging.WARNING and job_id in r.getMessage()]


def test_an_alert_slack_rate_limits_is_retried_after_its_retry_after(
        mesh: Mesh, caplog: pytest.LogCaptureFixture) -> None:
    job_id = alert_job(mesh, "payment-service")
    # More than the notifier waits inline, twice (its own one retry): the job must give way.
    mesh.slack.rate_limit("chat.postMessage", times=2, retry_after=10)
    started = time.time()
    with caplog.at_level(logging.INFO):
        mesh.run_jobs()
    scheduled = queue(mesh).scheduled_job_registry
    assert scheduled.get_job_ids() == [job_id]
    due = mesh.redis.zscore(scheduled.key, job_id)  # when RQ will release it
    assert due is not None
    assert due - started >= 10 - 1  # Slack's Retry-After, not RQ's fixed 1 s
    [said] = about(caplog, job_id)
    assert said.levelno == logging.WARNING and not said.exc_info
    assert "retried in 10s" in said.getMessage()


def no_channel_policy(directory: Path) -> Path:
    data = yaml.safe_load(CONTRACT_POLICY.read_text())
    data["channels"] = []
    path = directory / "no-channel-policy.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def assert_failed_once(mesh: Mesh, caplog: pytest.LogCaptureFixture, job_id: str,
                       reason: str) -> None:
    assert queue(mesh).scheduled_job_registry.get_job_ids() == []  # no retry
    job = Job.fetch(job_id, connection=mesh.redis, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.FAILED
    assert queue(mesh).failed_job_registry.get_job_ids() == [job_id]
    [said] = about(caplog, job_id)
    assert said.levelno == logging.ERROR and not said.exc_info
    assert "not retried" in said.getMessage() and reason in said.getMessage()
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    assert mesh.slack.calls("chat.postMessage") == []


def test_an_alert_with_no_channel_to_go_to_fails_once_without_retry(
        mesh: Mesh, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The policy names no channel, and the alert's service has none: a PermanentError."""
    monkeypatch.setenv("MESHBOT_POLICY", str(no_channel_policy(tmp_path)))
    context.reset()
    job_id = alert_job(mesh, "not-a-service-in-the-policy")
    with caplog.at_level(logging.INFO):
        mesh.run_jobs()
    assert_failed_once(mesh, caplog, job_id, "names no channel")


def test_a_command_redis_rejects_fails_the_job_once_without_retry(
        mesh: Mesh, caplog: pytest.LogCaptureFixture) -> None:
    """Redis answers, and refuses the command (WRONGTYPE): a bug no retry mends."""
    mesh.redis.rpush(AlertThreads(mesh.redis)._group(GROUP_KEY), "not a thread")
    job_id = alert_job(mesh, "payment-service")
    with caplog.at_level(logging.INFO):
        mesh.run_jobs()
    assert_failed_once(mesh, caplog, job_id, "Redis rejected meshbot's command")
    # Redis's reply is for the log, not in the words people read.
    assert any("WRONGTYPE" in r.getMessage() for r in caplog.records if r.name == "meshbot.redis")
