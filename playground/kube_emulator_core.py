"""The emulated API server itself: kmock's ``KubernetesEmulator`` plus what meshbot relies on.

kmock 0.8's ``KubernetesEmulator`` stores objects and serves GET/LIST/POST/PATCH/DELETE. meshbot's
safety depends on API-server behaviour it lacks, so this subclass adds it (its docstring invites
that): a resourceVersion that changes on every write (one cluster-wide counter, like etcd's
revision), uid/creationTimestamp/generation, 409 Conflict for a write that carries a stale
resourceVersion, PUT (replace), label selectors on LIST, cluster-scoped ``namespaces``, and
injectable faults (a status, a stall, a concurrent write just before the next matching one, a
request held until the test lets it through, a request served whose answer is lost).

Unlike kmock, writes happen in the fallback handlers, not before the reactions run: a request
that a reaction intercepts (say ``emulator["patch"][:1] << 409``) leaves the object untouched, as
a refused write does on a real API server.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import json
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp.web
import attrs
import jsonpatch
import kmock

Obj = dict[str, Any]
Key = tuple[kmock.resource, str | None, str]  # (resource, namespace or None, name)
T = TypeVar("T")

NAMESPACES = kmock.resource("", "v1", "namespaces")
RECEIVED_KEPT = 10_000  # requests remembered with their arrival time
REQUESTS_KEPT = 200  # kmock's own record of requests (see MeshEmulator._forget_answered)
# kmock's URL parser reads /api/v1/namespaces[/x] as a namespace prefix (500 on POST, 404 on GET).
_NAMESPACE_PATH = re.compile(r"/api/v1/namespaces(?:/(?P<name>[^/]+))?/?")
_SELECTOR_TERM = re.compile(
    r"(?P<neg>!)?(?P<key>[\w./-]+)"
    r"(?:\s*(?P<op>==|=|!=)\s*(?P<val>[\w.-]*)|\s+(?P<setop>in|notin)\s*\((?P<vals>[^)]*)\))?"
)


def _status_error(status: int, reason: str, message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=status, reason=reason, message=message, details={})


def label_selector(text: str) -> Callable[[Mapping[str, str]], bool]:
    """Parse a Kubernetes label selector (=, ==, !=, in, notin, key, !key) into a predicate."""
    terms: list[tuple[str, str, frozenset[str]]] = []  # (operator, key, values)
    for term in filter(None, (t.strip() for t in re.split(r",(?![^(]*\))", text))):
        m = _SELECTOR_TERM.fullmatch(term)
        if m is None:
            raise _status_error(400, "BadRequest", f"unable to parse requirement: {term!r}")
        values = m["vals"].split(",") if m["setop"] else [m["val"] or ""]
        op = "!" if m["neg"] else m["setop"] or {"==": "=", None: "exists"}.get(m["op"], m["op"])
        terms.append((op, m["key"], frozenset(v.strip() for v in values)))

    def selects(labels: Mapping[str, str]) -> bool:
        for op, key, values in terms:
            value = labels.get(key)
            ok = {
                "!": value is None,
                "exists": value is not None,
                "=": value in values,
                "in": value in values,
                "!=": value not in values,
                "notin": value not in values,
            }[op]
            if not ok:
                return False
        return True

    return selects


@dataclass(frozen=True)
class Received:
    """One request as it reached the emulator."""

    at: float  # time.time() on arrival
    method: str
    plural: str | None
    name: str | None


def _status_response(status: int, message: str,
                     headers: Mapping[str, str]) -> aiohttp.web.Response:
    """A Status answer carrying ``headers`` (kmock's own error rendering sets none)."""
    body = {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
            "message": message, "reason": "Injected", "details": {}, "code": status}
    return aiohttp.web.json_response(body, status=status, headers=dict(headers))


@dataclass
class Hold:
    """A request held on arrival until ``release()``, then served as usual, while every other
    request goes on: a test runs one client's work between two of another's, deterministically
    (``reached`` says the held request has arrived)."""

    timeout: float = 30.0  # never released: answered 504, as a stall is
    reached: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        self.released.set()


@dataclass
class Fault:
    """What to do instead of (or before) the next ``times`` requests that match."""

    method: str | None
    plural: str | None
    name: str | None
    times: int
    status: int = 0  # answer with this status and change nothing
    headers: Mapping[str, str] = field(default_factory=dict)  # ... and these headers (Retry-After)
    stall: float = 0.0  # hold the request this long (the client should time out first)
    change: Callable[[Obj], None] | None = None  # a concurrent write, applied before this one
    hold: Hold | None = None  # held until released, then served
    lost_answer: bool = False  # served (a write lands), then answered ``status`` instead
    then: Fault | None = None  # armed once this one has answered: a fault for a later request

    def matches(self, request: kmock.Request) -> bool:
        plural = request.resource.plural if request.resource is not None else None
        return (
            self.times > 0
            and (self.method is None or self.method.upper() == str(request.method.value).upper())
            and (self.plural is None or self.plural == plural)
            and (self.name is None or self.name == request.name)
        )


@attrs.define(kw_only=True)
class MeshEmulator(kmock.KubernetesEmulator):
    """kmock's emulator with the API-server semantics meshbot's optimistic concurrency needs."""

    _revision: int = attrs.field(default=0, init=False)
    _faults: list[Fault] = attrs.field(factory=list, init=False)
    _faults_lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    # When each request arrived (time.time()), with its method, plural and name: a test reads
    # when a client came back after an injected fault. The latest ones: the playground's runs
    # for hours.
    received: deque[Received] = attrs.field(factory=lambda: deque(maxlen=RECEIVED_KEPT),
                                            init=False)
    _released: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)
    _in_flight: int = attrs.field(default=0, init=False)  # requests being answered (on the loop)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.fallback[kmock.method.PUT] << self._serve_replace

    def add_fault(self, fault: Fault) -> None:
        with self._faults_lock:  # faults are added from test threads, taken on the loop
            self._faults.append(fault)

    def release_stalls(self) -> None:
        self._released.set()

    def _take_fault(self, request: kmock.Request) -> Fault | None:
        with self._faults_lock:
            for fault in self._faults:
                if fault.matches(request):
                    fault.times -= 1
                    if fault.then is not None:
                        self._faults.append(fault.then)
                        fault.then = None
                    return fault
        return None

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        self._in_flight += 1
        try:
            return await self._serve_request(raw_request)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._forget_answered()

    def _forget_answered(self) -> None:
        """Keep kmock's record of requests to the latest ``REQUESTS_KEPT``. kmock finds which
        reaction a request reaches by filtering every request it has recorded, so each request
        cost more than the one before: after ten minutes of the soak, a GET took seconds and a
        call on the loop timed out. Trimmed only while no request is being answered (one held
        or stalled must still be found among them); a reaction on a slice of requests
        (``[:1]``) counts within what is kept."""
        if len(self._requests) > REQUESTS_KEPT:
            del self._requests[:-REQUESTS_KEPT]
        for payload in self._payloads:
            if len(payload._requests) > REQUESTS_KEPT:
                del payload._requests[:-REQUESTS_KEPT]

    async def _serve_request(
            self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        match = _NAMESPACE_PATH.fullmatch(raw_request.path)
        if match is None:
            return await super().__call__(raw_request)
        body = await raw_request.read()
        try:
            request = kmock.Request(
                id=len(self._requests),
                method=raw_request.method,
                url=raw_request.url,
                params=dict(raw_request.query),
                headers=dict(raw_request.headers),
                body=body,
                text=body.decode(),
                data=json.loads(body) if body else None,
                resource=NAMESPACES,
                name=match["name"],
                action=_namespace_action(raw_request, match["name"]),
                raw_request=raw_request,
            )
            # kmock's views find a request by identity among the requests it has recorded.
            self._requests.append(request)
            return await self._handle(request)
        except Exception as exc:  # rendered as a Status, as kmock does for the other paths
            return await self._render_error(exc)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        plural = request.resource.plural if request.resource is not None else None
        self.received.append(Received(time.time(), str(request.method.value).upper(), plural,
                                      request.name))
        fault = self._take_fault(request)
        if fault is not None and fault.change is not None:
            await self._interfere(request, fault.change)
        elif fault is not None and fault.stall:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._released.wait(), fault.stall)
            raise _status_error(504, "Timeout", "injected stall")
        elif fault is not None and fault.hold is not None:
            fault.hold.reached.set()
            # Waited for off the loop: the other clients' requests are served meanwhile.
            if not await asyncio.to_thread(fault.hold.released.wait, fault.hold.timeout):
                raise _status_error(504, "Timeout", "held request never released")
        elif fault is not None and fault.lost_answer:
            await super(kmock.KubernetesEmulator, self)._handle(request)
            raise _status_error(fault.status, "Injected", f"injected HTTP {fault.status} "
                                "after the request was served")
        elif fault is not None and fault.headers:
            return _status_response(fault.status, f"injected HTTP {fault.status}", fault.headers)
        elif fault is not None:
            raise _status_error(fault.status, "Injected", f"injected HTTP {fault.status}")
        # Skip KubernetesEmulator._handle: it writes before the reactions run (module docstring).
        return await super(kmock.KubernetesEmulator, self)._handle(request)

    # --- serving (fallbacks: reached only when no reaction intercepted the request) ---

    async def _serve_list(self, request: kmock.Request) -> kmock.Payload:
        selects = label_selector(request.params.get("labelSelector", ""))
        async with self._lock:
            if request.resource not in self._get_resources():
                raise kmock.KubernetesResourceNotFoundError()
            items = [
                copy.deepcopy(obj.raw)
                for (res, ns, _), obj in self.objects.items()
                if res == request.resource and not obj.deleted
                if request.namespace is None or ns == request.namespace
                if selects(obj.raw.get("metadata", {}).get("labels") or {})
            ]
            version = str(self._revision)
        return {
            "apiVersion": "v1",
            "kind": "List",
            "metadata": {"resourceVersion": version},
            "items": items,
        }

    async def _serve_fetch(self, request: kmock.Request) -> kmock.Payload:
        async with self._lock:
            return copy.deepcopy(self._live(request))

    async def _serve_create(self, request: kmock.Request) -> kmock.Payload:
        body = _body_object(request)
        meta = body.setdefault("metadata", {})
        if not meta.get("name"):
            raise _status_error(422, "Invalid", "metadata.name: Required value")
        if request.namespace is not None:
            meta["namespace"] = request.namespace
        async with self._lock:
            key = self._key(request, meta["name"])
            if key in self.objects and not self.objects[key].deleted:
                raise _status_error(
                    409, "AlreadyExists", f'{_kind(request)} "{meta["name"]}" already exists'
                )
            created = await self._write(key, body, None)
        # kmock.Response is public but missing from kmock 0.8's __all__, hence the ignore.
        return kmock.Response(status=201, payload=created)  # type: ignore[attr-defined]

    async def _serve_update(self, request: kmock.Request) -> kmock.Payload:
        async with self._lock:
            current = self._live(request)
            try:
                if isinstance(request.data, list):
                    patched = jsonpatch.apply_patch(current, request.data)
                elif isinstance(request.data, dict):
                    patched = merge_patch(current, request.data)
                else:
                    raise ValueError("a patch is a JSON object or a JSON-patch list")
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, ValueError) as e:
                raise _status_error(422, "Invalid", str(e)) from e
            return await self._commit(request, current, patched)

    async def _serve_replace(self, request: kmock.Request) -> kmock.Payload:
        body = _body_object(request)
        if body.get("metadata", {}).get("name") not in (None, request.name):
            raise _status_error(400, "BadRequest", "the name of the object does not match the URL")
        async with self._lock:
            return await self._commit(request, self._live(request), body)

    async def _serve_delete(self, request: kmock.Request) -> kmock.Payload:
        async with self._lock:
            current = self._live(request)
            pre = request.data.get("preconditions") or {} if isinstance(request.data, dict) else {}
            meta = current["metadata"]
            if pre.get("resourceVersion") not in (None, meta["resourceVersion"]) or pre.get(
                "uid"
            ) not in (None, meta["uid"]):
                raise self._conflict(request)
            self.objects[self._key(request)].delete()
            await self._buses[self._key(request)[0]].put({"type": "DELETED", "object": current})
            return current

    # --- storage (callers hold self._lock) ---

    def _key(self, request: kmock.Request, name: str | None = None) -> Key:
        assert request.resource is not None and (name or request.name) is not None
        return request.resource, request.namespace, name or request.name or ""

    def _live(self, request: kmock.Request) -> Obj:
        if request.subresource not in (None, "status"):
            raise kmock.KubernetesEndpointNotFoundError()
        key = self._key(request)
        if key not in self.objects or self.objects[key].deleted:
            raise _status_error(404, "NotFound", f'{_kind(request)} "{request.name}" not found')
        return copy.deepcopy(self.objects[key].raw)

    async def _commit(self, request: kmock.Request, current: Obj, new: Obj) -> Obj:
        # As on a real API server, a resourceVersion in the written object is a precondition.
        if new.get("metadata", {}).get("resourceVersion") not in (
            None,
            "",
            current["metadata"]["resourceVersion"],
        ):
            raise self._conflict(request)
        if request.subresource == "status":  # the status subresource writes status only
            new = dict(current, status=new.get("status"))
        return await self._write(self._key(request), new, current)

    async def _write(self, key: Key, new: Obj, current: Obj | None) -> Obj:
        new = copy.deepcopy(new)
        meta = new.setdefault("metadata", {})
        if current is None:
            meta.pop("resourceVersion", None)
            meta.update(uid=str(uuid.uuid4()), generation=1, creationTimestamp=_now())
        else:
            old = current["metadata"]
            for field in ("name", "namespace", "uid", "creationTimestamp", "resourceVersion"):
                if field in old:
                    meta[field] = old[field]
            if new == current:
                return new  # a no-op write keeps its resourceVersion, as on a real API server
            meta["generation"] = old.get("generation", 1) + (new.get("spec") != current.get("spec"))
        self._revision += 1
        meta["resourceVersion"] = str(self._revision)
        if key in self.objects:
            self.objects[key].history.append(new)
        else:
            self.objects[key] = new
        event = "ADDED" if current is None else "MODIFIED"
        await self._buses[key[0]].put({"type": event, "object": copy.deepcopy(new)})
        return copy.deepcopy(new)

    async def _interfere(self, request: kmock.Request, change: Callable[[Obj], None]) -> None:
        async with self._lock:
            current = self._live(request)
            changed = copy.deepcopy(current)
            change(changed)
            await self._write(self._key(request), changed, current)

    def _conflict(self, request: kmock.Request) -> kmock.KubernetesError:
        return _status_error(
            409,
            "Conflict",
            f"Operation cannot be fulfilled on {_kind(request)} "
            f'"{request.name}": the object has been modified; please apply your '
            "changes to the latest version and try again",
        )

    # --- direct access for tests and seeding (run on the loop; see RunningCluster) ---

    async def store(self, resource: kmock.resource, obj: Obj) -> Obj:
        """Create or replace an object unconditionally (still a write: a new resourceVersion)."""
        meta = obj.get("metadata", {})
        key = (resource, meta.get("namespace"), meta["name"])
        async with self._lock:
            live = key in self.objects and not self.objects[key].deleted
            current = copy.deepcopy(self.objects[key].raw) if live else None
            return await self._write(key, obj, current)

    async def change(
        self,
        resource: kmock.resource,
        namespace: str | None,
        name: str,
        mutate: Callable[[Obj], None],
    ) -> Obj:
        """Read-modify-write one object atomically (for tests: a concurrent controller)."""
        async with self._lock:
            request = kmock.Request(resource=resource, namespace=namespace, name=name)
            current = self._live(request)
            changed = copy.deepcopy(current)
            mutate(changed)
            return await self._write(self._key(request), changed, current)

    async def read(self, resource: kmock.resource, namespace: str | None, name: str) -> Obj | None:
        async with self._lock:
            key = (resource, namespace, name)
            live = key in self.objects and not self.objects[key].deleted
            return copy.deepcopy(self.objects[key].raw) if live else None


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 merge patch: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _namespace_action(raw: aiohttp.web.BaseRequest, name: str | None) -> kmock.action | None:
    if raw.method == "GET":
        watch = raw.query.get("watch") in ("true", "1")
        return kmock.action.WATCH if watch else kmock.action.FETCH if name else kmock.action.LIST
    verbs = (
        {"POST": kmock.action.CREATE}
        if name is None
        else {"PATCH": kmock.action.UPDATE, "DELETE": kmock.action.DELETE}
    )
    return verbs.get(raw.method)


def _body_object(request: kmock.Request) -> Obj:
    if not isinstance(request.data, dict):
        raise _status_error(400, "BadRequest", "the request body must be a JSON object")
    return copy.deepcopy(request.data)


def _kind(request: kmock.Request) -> str:
    res = request.resource
    return (
        f"{res.plural}.{res.group}"
        if res is not None and res.group
        else str(res.plural if res is not None else "object")
    )


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


