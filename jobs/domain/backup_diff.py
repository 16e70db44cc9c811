"""What a backup of a namespace's mesh configuration holds, and the pure diff with the live one.

A backup holds the runbook's five kinds, each object stripped of what the API server sets
(resourceVersion, uid, creationTimestamp, generation, managedFields, status), so it can be
created again as it is and compared with the live object field by field.

Only the kinds meshbot itself changes (and has RBAC to write) are restored: VirtualServices,
DestinationRules and PeerAuthentications. Gateways and AuthorizationPolicies are kept for the
record and for a human to re-apply.
"""

from __future__ import annotations

import copy
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from jobs.domain.server_fields import resource_version
from meshbot.plan import field_changes

Obj = dict[str, Any]

SERVER_SET_METADATA = ("resourceVersion", "uid", "creationTimestamp", "generation",
                       "managedFields", "selfLink", "deletionTimestamp",
                       "deletionGracePeriodSeconds")

@dataclass(frozen=True)
class MeshKind:
    kind: str
    api: str  # "networking" or "security": the group/version comes from the settings
    plural: str
    restorable: bool

KINDS: tuple[MeshKind, ...] = (
    MeshKind("VirtualService", "networking", "virtualservices", True),
    MeshKind("DestinationRule", "networking", "destinationrules", True),
    MeshKind("Gateway", "networking", "gateways", False),
    MeshKind("PeerAuthentication", "security", "peerauthentications", True),
    MeshKind("AuthorizationPolicy", "security", "authorizationpolicies", False),
)

KIND_BY_NAME = {k.kind: k for k in KINDS}

def clean(obj: Mapping[str, Any]) -> Obj:
    """The object as it can be written again: no server-set metadata, no status."""
    result = copy.deepcopy(dict(obj))
    result.pop("status", None)
    meta = result.get("metadata") or {}
    for field in SERVER_SET_METADATA:
        meta.pop(field, None)
    for where in ("labels", "annotations"):
        if where in meta and not meta[where]:
            meta.pop(where)  # an empty map and no map are the same to the API server
    return result

def managed_view(obj: Mapping[str, Any]) -> Obj:
    """What a restore puts back and a diff compares: spec, labels and annotations."""
    meta = obj.get("metadata") or {}
    return {
        "metadata": {"labels": dict(meta.get("labels") or {}),
                     "annotations": dict(meta.get("annotations") or {})},
        "spec": copy.deepcopy(obj.get("spec") or {}),
    }

def object_key(obj: Mapping[str, Any]) -> tuple[str, str]:
    return str(obj.get("kind", "")), str((obj.get("metadata") or {}).get("name", ""))

class Backup(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    namespace: str
    created_at: float
    user: str
    request_id: str
    objects: tuple[Obj, ...]

    def counts(self) -> dict[str, int]:
        """Objects per kind, every kind listed (a zero says the kind was looked for)."""
        counts = {k.kind: 0 for k in KINDS}
        for obj in self.objects:
            counts[object_key(obj)[0]] = counts.get(object_key(obj)[0], 0) + 1
        return counts

def new_backup_id(namespace: str, now: float) -> str:
    """Readable and unique: namespace, UTC time, a short random suffix (grammar's BACKUP_ID)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    return f"{namespace}-{stamp}-{secrets.token_hex(2)}"

class Change(StrEnum):
    CREATED = "created"  # in the backup, missing live: a restore creates it
    CHANGED = "changed"  # differs live: a restore puts the backup's fields back
    UNCHANGED = "unchanged"

@dataclass(frozen=True)
class ObjectDiff:
    kind: str
    name: str
    change: Change
    fields: tuple[str, ...] = ()  # dotted paths that differ (for CHANGED)

    @property
    def restorable(self) -> bool:
        return KIND_BY_NAME[self.kind].restorable if self.kind in KIND_BY_NAME else False

def field_differences(saved: Any, live: Any, path: str = "") -> list[str]:
    """Dotted paths where ``saved`` and ``live`` differ (list items by index: ``http[0]``)."""
    return [change.path for change in field_changes(saved, live, path)]

def diff(saved: Iterable[Mapping[str, Any]], live: Iterable[Mapping[str, Any]]) -> list[ObjectDiff]:
    """Per object of the backup: created, changed (with its fields) or unchanged, by the
    fields a restore manages. Live objects the backup does not hold are left alone."""
    live_by_key = {object_key(obj): obj for obj in live}
    order = {k.kind: i for i, k in enumerate(KINDS)}
    result: list[ObjectDiff] = []
    for obj in sorted(saved, key=lambda o: (order.get(object_key(o)[0], 99), object_key(o)[1])):
        kind, name = object_key(obj)
        current = live_by_key.get((kind, name))
        if current is None:
            result.append(ObjectDiff(kind, name, Change.CREATED))
            continue
        fields = field_differences(managed_view(obj), managed_view(current))
        change = Change.CHANGED if fields else Change.UNCHANGED
        result.append(ObjectDiff(kind, name, change, tuple(fields)))
    return result

def restored_body(saved: Mapping[str, Any], live: Mapping[str, Any] | None) -> Obj:
    """What to write: the saved object, to create (no live one) or to PUT over the live one,
    conditional on its resourceVersion (a real API server refuses a replace without one, and
    without it the write would not be conditional). MeshInvalid when the live one has none."""
    body = clean(saved)
    if live is not None:
        meta = live.get("metadata") or {}
        what = f"{live.get('kind', 'object')} {meta.get('namespace')}/{meta.get('name')}"
        body.setdefault("metadata", {})["resourceVersion"] = resource_version(live, what)
    return body
