"""meshbot's settings as an operator sets them: environment names and defaults (a contract)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import policies
from meshbot.settings import Settings
from policies.loader import load_policy_file

CONTRACT_ENV = ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN", "SLACK_API_URL",
                "REDIS_URL", "PROMETHEUS_URL", "MESHBOT_POLICY", "ALERTMANAGER_TOKEN")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees only the variables it sets (the suite's fixtures set some of these)."""
    for name in CONTRACT_ENV:
        monkeypatch.delenv(name, raising=False)


def test_slack_api_url_defaults_to_slack() -> None:
    assert Settings().slack_api_url == "https://slack.com/api/"


@pytest.mark.parametrize(("given", "expected"), [
    ("http://127.0.0.1:8080/api", "http://127.0.0.1:8080/api/"),
    ("http://127.0.0.1:8080/api/", "http://127.0.0.1:8080/api/"),
    ("https://slack.example.com/api", "https://slack.example.com/api/"),
])
def test_slack_api_url_is_normalised_to_end_with_a_slash(
        monkeypatch: pytest.MonkeyPatch, given: str, expected: str) -> None:
    monkeypatch.setenv("SLACK_API_URL", given)
    assert Settings().slack_api_url == expected


def test_slack_api_url_normalised_when_passed_directly() -> None:
    settings = Settings.model_validate({"SLACK_API_URL": "http://stand-in/api"})
    assert settings.slack_api_url == "http://stand-in/api/"


def test_default_policy_is_the_packaged_default_yaml() -> None:
    path = Settings().policy_path
    assert path.is_absolute()
    assert path == Path(policies.__file__).resolve().parent / "default.yaml"
    assert path.is_file()


def test_default_policy_is_found_from_any_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = Settings().policy_path
    assert path.is_file()
    policy = load_policy_file(path)
    assert "payment-service" in policy.service_names


def test_default_policy_path_in_a_fresh_process_elsewhere(tmp_path: Path) -> None:
    """A process started in another directory (as a container's would be) finds it too."""
    env = {k: v for k, v in os.environ.items() if k not in CONTRACT_ENV}
    code = "from meshbot.settings import Settings; print(Settings().policy_path)"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60, check=True)
    path = Path(result.stdout.strip())
    assert path.is_absolute() and path.is_file() and path.name == "default.yaml"


def test_meshbot_policy_overrides_the_default(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = tmp_path / "mine.yaml"
    monkeypatch.setenv("MESHBOT_POLICY", str(chosen))
    assert Settings().policy_path == chosen


def test_contract_environment_names_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "secret")
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-1")
    monkeypatch.setenv("REDIS_URL", "redis://redis:6379/3")
    monkeypatch.setenv("PROMETHEUS_URL", "http://prometheus:9090")
    monkeypatch.setenv("ALERTMANAGER_TOKEN", "am-token")
    settings = Settings()
    assert settings.slack_bot_token.get_secret_value() == "xoxb-1"
    assert settings.slack_signing_secret.get_secret_value() == "secret"
    assert settings.slack_app_token.get_secret_value() == "xapp-1"
    assert settings.redis_url == "redis://redis:6379/3"
    assert settings.prometheus_url == "http://prometheus:9090"
    assert settings.alertmanager_token.get_secret_value() == "am-token"
    assert "xoxb-1" not in repr(settings)  # secrets are not printed in logs


def test_istio_api_versions_default_to_the_runbooks() -> None:
    settings = Settings()
    assert settings.networking_group_version == ("networking.istio.io", "v1beta1")
    assert settings.security_group_version == ("security.istio.io", "v1beta1")
