"""Alertmanager's webhook payload (version 4), as meshbot reads it: shared by the webhook that
validates it and the job that posts the alert thread.
"""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel, ConfigDict, Field


class Alert(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    status: str
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: str = Field("", alias="startsAt")
    ends_at: str = Field("", alias="endsAt")
    generator_url: str = Field("", alias="generatorURL")
    fingerprint: str = ""


class Notification(BaseModel):
    """One webhook call: an alert group's current state (Alertmanager's documented format)."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    version: str
    group_key: str = Field(alias="groupKey")
    status: str
    receiver: str = ""
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[str, str] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field("", alias="externalURL")
    truncated_alerts: int = Field(0, alias="truncatedAlerts")
    alerts: list[Alert] = Field(min_length=1)

    def service(self) -> str | None:
        """The service concerned: Istio's ``destination_service_name`` label, else ``service``
        (common labels first, then the first alert that has one)."""
        for key in ("destination_service_name", "service"):
            for labels in (self.common_labels, *(a.labels for a in self.alerts)):
                if labels.get(key):
                    # Istio labels may carry the FQDN's first label only; keep that part.
                    return labels[key].split(".")[0]
        return None

    def label(self, key: str) -> str | None:
        """A label's value: the common labels first, then the first alert that has it."""
        for labels in (self.common_labels, *(a.labels for a in self.alerts)):
            if labels.get(key):
                return labels[key]
        return None

    def digest(self) -> str:
        """The content that matters to the thread; equal digests mean nothing new to say."""
        alerts = sorted(json.dumps([a.fingerprint, a.status, a.starts_at, a.labels,
                                    a.annotations], sort_keys=True) for a in self.alerts)
        shown = [self.group_key, self.status, *alerts]
        return hashlib.sha256(json.dumps(shown).encode()).hexdigest()
