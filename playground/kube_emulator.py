"""A Kubernetes API emulator for the fault-injecting tests and the playground, served over HTTP.

The emulator (``playground.kube_emulator_core.MeshEmulator``: kmock plus resourceVersions, 409s,
PUT, label selectors, cluster-scoped namespaces and injectable faults) runs on 127.0.0.1 (port 0)
from a thread with its own event loop; ``RunningCluster``'s helpers are safe to call from any
thread. The suite's default Kubernetes is the real kube-apiserver; this one stays where a test
injects faults the real server will not produce on demand.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiohttp.web
import kmock

from playground.kube_emulator_core import (  # re-exported: the emulator's public names
    NAMESPACES,
    Fault,
    Hold,
    Key,
    MeshEmulator,
    Obj,
    Received,
    label_selector,
)

T = TypeVar("T")

__all__ = ["NAMESPACES", "Fault", "Hold", "Key", "MeshEmulator", "Obj", "Received",
           "RunningCluster", "label_selector", "start_cluster"]


class RunningCluster:
    """The emulator served over HTTP from a background thread; every helper is thread-safe."""

    def __init__(self) -> None:
        self.url = ""
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kube-emulator", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._emulator: MeshEmulator | None = None
        self._failure: BaseException | None = None

    def start(self, timeout: float = 10.0) -> RunningCluster:
        self._thread.start()
        if not self._ready.wait(timeout) or self._emulator is None:
            raise RuntimeError("the Kubernetes emulator did not start") from self._failure
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start(); a thread cannot raise to its caller
            self._failure = exc
            if self._ready.is_set():  # it had started: nobody waits on start() any more
                logging.getLogger("playground.kube").exception("the Kubernetes emulator stopped")
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        # Served by aiohttp directly, not kmock.Server: that one swaps aiohttp's process-wide DNS
        # resolver and insists on LIFO teardown, which clusters in several threads cannot promise.
        async with MeshEmulator() as emulator:
            runner = aiohttp.web.ServerRunner(
                aiohttp.web.Server(emulator), handle_signals=False, shutdown_timeout=1.0
            )
            await runner.setup()
            try:
                site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
                await site.start()
                self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
                self._emulator = emulator
                self._ready.set()
                await self._stop.wait()
                emulator.release_stalls()
            finally:
                await runner.cleanup()

    def call(self, fn: Callable[[MeshEmulator], T]) -> T:
        """Run ``fn(emulator)`` on the emulator's loop, e.g. to add kmock reactions."""
        emulator = self._emulator
        assert emulator is not None, "the cluster is not running"

        async def run() -> T:
            return fn(emulator)

        return self._await(run())

    def _await(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None, "the cluster is not running"
        if not self._thread.is_alive():  # its loop ended: say why, instead of a 10 s timeout
            coro.close()
            raise RuntimeError("the Kubernetes emulator stopped") from self._failure
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    @property
    def emulator(self) -> MeshEmulator:
        assert self._emulator is not None, "the cluster is not running"
        return self._emulator

    def write_kubeconfig(self, path: Path, *, namespace: str = "default") -> Path:
        """Write a kubeconfig (JSON is YAML) that ``kubernetes.config.load_kube_config`` loads."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "kmock",
            "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
            "users": [{"name": "kmock", "user": {"token": "kmock"}}],
            "contexts": [
                {
                    "name": "kmock",
                    "context": {"cluster": "kmock", "user": "kmock", "namespace": namespace},
                }
            ],
        }
        path.write_text(json.dumps(config, indent=2))
        return path

    def get(self, group: str, version: str, plural: str, namespace: str | None, name: str) -> Obj:
        """The stored object; KeyError when it does not exist."""
        obj = self._await(
            self.emulator.read(kmock.resource(group, version, plural), namespace, name)
        )
        if obj is None:
            raise KeyError(f"{plural}.{group} {namespace}/{name}")
        return obj

    def list(self, group: str, version: str, plural: str,
             namespace: str | None = None) -> list[Obj]:
        """Every live object of one kind (in ``namespace``), as stored."""
        res = kmock.resource(group, version, plural)

        def found(emulator: MeshEmulator) -> list[Obj]:
            return [copy.deepcopy(obj.raw) for (kind, ns, _), obj in emulator.objects.items()
                    if kind == res and namespace in (None, ns) and not obj.deleted]

        return self.call(found)

    def delete(self, group: str, version: str, plural: str, namespace: str | None,
               name: str) -> None:
        """Delete one object now (a controller's delete); KeyError when there is none."""
        key = (kmock.resource(group, version, plural), namespace, name)

        def gone(emulator: MeshEmulator) -> None:
            if key not in emulator.objects or emulator.objects[key].deleted:
                raise KeyError(f"{plural}.{group} {namespace}/{name}")
            emulator.objects[key].delete()

        self.call(gone)

    def put_object(self, group: str, version: str, plural: str, obj: Obj) -> Obj:
        """Create or replace an object (bumps its resourceVersion); returns what is stored."""
        return self._await(self.emulator.store(kmock.resource(group, version, plural), obj))

    def change(
        self,
        group: str,
        version: str,
        plural: str,
        namespace: str | None,
        name: str,
        mutate: Callable[[Obj], None],
    ) -> Obj:
        """Atomically read-modify-write an object, as a concurrent writer would."""
        res = kmock.resource(group, version, plural)
        return self._await(self.emulator.change(res, namespace, name, mutate))

    def fail(
        self,
        status: int,
        *,
        method: str | None = None,
        plural: str | None = None,
        name: str | None = None,
        times: int = 1,
        retry_after: float | str | None = None,
        then: Fault | None = None,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status`` and change nothing;
        with a ``Retry-After`` header if given (a 429, a 503): seconds, or the header's text
        as it is (an HTTP date). ``then``: a fault armed once the first of them answered (the
        next request after it that matches ``then`` meets it, not one before)."""
        value = f"{retry_after:g}" if isinstance(retry_after, int | float) else retry_after
        headers = {} if value is None else {"Retry-After": value}
        self.emulator.add_fault(Fault(method, plural, name, times, status=status,
                                      headers=headers, then=then))

    def received(self, *, method: str | None = None, plural: str | None = None,
                 name: str | None = None) -> tuple[Received, ...]:
        """The requests that reached the emulator so far (matching, if given), in order."""
        def matching(emulator: MeshEmulator) -> tuple[Received, ...]:
            return tuple(r for r in emulator.received
                         if (method is None or r.method == method.upper())
                         and plural in (None, r.plural) and name in (None, r.name))

        return self.call(matching)

    def lose_answer(
        self,
        status: int,
        *,
        method: str | None = None,
        plural: str | None = None,
        name: str | None = None,
        times: int = 1,
    ) -> None:
        """Serve the next matching requests (a write lands), then answer ``status`` instead of
        their answer: the answer lost on its way, as a proxy's timeout or a dropped connection
        after the API server committed the write leaves it."""
        self.emulator.add_fault(Fault(method, plural, name, times, status=status,
                                      lost_answer=True))

    def stall(
        self,
        seconds: float,
        *,
        method: str | None = None,
        plural: str | None = None,
        name: str | None = None,
        times: int = 1,
    ) -> None:
        """Hold the next matching requests (a client with a shorter timeout times out)."""
        self.emulator.add_fault(Fault(method, plural, name, times, stall=seconds))

    def hold(
        self,
        *,
        method: str | None = None,
        plural: str | None = None,
        name: str | None = None,
        timeout: float = 30.0,
    ) -> Hold:
        """Hold the next matching request until the returned ``Hold`` is released, then serve
        it as usual; other requests are served meanwhile."""
        held = Hold(timeout=timeout)
        self.emulator.add_fault(Fault(method, plural, name, 1, hold=held))
        return held

    def interfere(
        self,
        mutate: Callable[[Obj], None],
        *,
        method: str | None = "PATCH",
        plural: str | None = None,
        name: str | None = None,
        times: int = 1,
    ) -> None:
        """Just before the next matching write lands, apply ``mutate`` as a concurrent writer."""
        self.emulator.add_fault(Fault(method, plural, name, times, change=mutate))


@contextmanager
def start_cluster() -> Iterator[RunningCluster]:
    """A running, empty emulator; stopped on exit."""
    cluster = RunningCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()
