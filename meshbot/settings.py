"""The one typed settings object, read from the environment.

The variable names are a contract with operators and the Helm chart: keep them.
"""

from __future__ import annotations

from functools import cached_property
from importlib import resources
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SLACK_API_URL = "https://slack.com/api/"


def packaged_default_policy() -> Path:
    """The ``default.yaml`` shipped inside the ``policies`` package, wherever it is installed."""
    return Path(str(resources.files("policies").joinpath("default.yaml")))


class Settings(BaseSettings):
    """meshbot's configuration. Every field maps to one environment variable."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    slack_bot_token: SecretStr = Field(default=SecretStr(""), validation_alias="SLACK_BOT_TOKEN")
    slack_signing_secret: SecretStr = Field(
        default=SecretStr(""), validation_alias="SLACK_SIGNING_SECRET"
    )
    slack_app_token: SecretStr = Field(default=SecretStr(""), validation_alias="SLACK_APP_TOKEN")
    slack_api_url: str = Field(default=DEFAULT_SLACK_API_URL, validation_alias="SLACK_API_URL")
    redis_url: str = Field(default="redis://localhost:6379/0", validation_alias="REDIS_URL")
    prometheus_url: str = Field(default="http://localhost:9090", validation_alias="PROMETHEUS_URL")
    policy_path: Path = Field(
        default_factory=packaged_default_policy,
        validation_alias=AliasChoices("MESHBOT_POLICY"),
    )
    alertmanager_token: SecretStr = Field(
        default=SecretStr(""), validation_alias="ALERTMANAGER_TOKEN"
    )
    namespace: str = Field(
        default="meshbot",
        validation_alias="MESHBOT_NAMESPACE",
        description="meshbot's own namespace: never injected, made STRICT, or touched by emergency",
    )
    istio_namespace: str = Field(
        default="istio-system",
        validation_alias="MESHBOT_ISTIO_NAMESPACE",
        description="Istio's control-plane namespace, where `readiness` looks for istiod",
    )
    networking_api_version: str = Field(
        default="networking.istio.io/v1beta1", validation_alias="MESHBOT_NETWORKING_API_VERSION"
    )
    security_api_version: str = Field(
        default="security.istio.io/v1beta1", validation_alias="MESHBOT_SECURITY_API_VERSION"
    )
    scrape_interval_s: float = Field(
        default=15.0, gt=0, validation_alias="MESHBOT_SCRAPE_INTERVAL",
        description="Prometheus's scrape interval (s): rate windows hold at least four scrapes",
    )
    tick_period_s: float = Field(
        default=1.0, gt=0, validation_alias="MESHBOT_TICK_PERIOD",
        description="how often a worker looks for rollouts whose analysis check is due (s)",
    )
    queue_name: str = Field(default="meshbot", validation_alias="MESHBOT_QUEUE")

    @field_validator("slack_api_url")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        # slack_sdk joins method names onto the base URL, so it must end with "/".
        return value if value.endswith("/") else value + "/"

    @cached_property
    def networking_group_version(self) -> tuple[str, str]:
        group, _, version = self.networking_api_version.partition("/")
        return group, version

    @cached_property
    def security_group_version(self) -> tuple[str, str]:
        group, _, version = self.security_api_version.partition("/")
        return group, version
