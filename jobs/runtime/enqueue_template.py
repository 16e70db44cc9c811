"""RQ's enqueue of one job, recorded once and replayed with the next job's values.

Building an RQ job in Python (``Job.create``, its call-string description, ``to_dict``, the
pipeline's argument packing) was the largest part of the CPU an ack costs, and all of it but
five values is the same for every request of one kind. So RQ records its writes once per
(queue, function, options), into a pipeline that is never executed, for a job whose id and
argument are markers; each request then fills the slots the markers mark, and the writes go
into the submit script as one packed argument (``api._REPLAY``), as before.

What stays RQ's: every command, key and field RQ writes, in its order, and the options it
encodes (retries, intervals, timeouts, TTLs, status, origin). What each request fills in: the job
id (wherever it appears), ``data`` (RQ's serializer, then zlib, which RQ's ``Job.restore`` reads),
``created_at`` and ``enqueued_at`` (RQ's own ``utcformat``), and ``description`` (RQ's is a
truncated repr of the arguments; the request's id says more in a worker's log, and costs
nothing). A recorded write that would need anything else refuses to be a template
(``TemplateError``), and ``tests/integration/test_enqueue_template.py`` compares the result,
field by field, with RQ's own enqueue of the same job.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import redis
from redis.client import Pipeline
from rq.utils import utcformat

_ID = "meshbot-template-job-id"
_ARG = "meshbot-template-argument"
# Fields of RQ's job hash that change from one job to the next.
_PER_JOB = frozenset({b"data", b"created_at", b"enqueued_at", b"description"})


class TemplateError(RuntimeError):
    """RQ wrote something this template cannot fill in (a newer RQ?): enqueue through RQ."""


Slot = bytes | str  # a constant chunk, or the name of a value each job fills in


class EnqueueTemplate:
    """RQ's writes for ``enqueue(pipeline, job_id, argument)``, with holes for the next job."""

    def __init__(self, client: redis.Redis, func: str,
                 enqueue: Callable[[Pipeline, str, Any], object]) -> None:
        self.func = func
        recorder = client.pipeline(transaction=False)
        try:
            enqueue(recorder, _ID, _ARG)
            commands = [command for command, _options in recorder.command_stack]
        finally:
            recorder.reset()
        self.slots = _slots(commands, client.get_encoder().encode)

    def writes(self, job_id: str, argument: Any, description: str) -> bytes:
        """The packed writes (``api._packed``'s format) that enqueue ``func(argument)`` as
        ``job_id``."""
        stamp = utcformat(datetime.now(UTC)).encode()
        values = {
            "id": job_id.encode(),
            # RQ's JSONSerializer.dumps of (function, instance, args, kwargs), zlib-compressed
            # as RQ's Job.to_dict does (with a smaller window: ``_compressed``).
            "data": _compressed(json.dumps((self.func, None, (argument,), {})).encode()),
            "created_at": stamp, "enqueued_at": stamp,
            "description": description.encode(),
        }
        out: list[bytes] = []
        for slot in self.slots:
            if isinstance(slot, bytes):
                out.append(slot)
            elif slot.startswith("id:"):  # a part holding the job id, e.g. ``rq:job:<id>``
                raw = slot[3:].replace(_ID, job_id).encode()
                out += (b"%d:" % len(raw), raw)
            else:
                raw = values[slot]
                out += (b"%d:" % len(raw), raw)
        return b"".join(out)


def _compressed(data: bytes) -> bytes:
    """A zlib stream as RQ's ``zlib.decompress`` reads it. ``zlib.compress`` sets up a 32 KiB
    window and its full hash tables for a job's few hundred bytes; with a 512-byte window and
    the smallest tables an ack cost about 80 µs less CPU (in-process), and a job's data (about
    350 bytes) comes out within a few bytes of the same size."""
    packer = zlib.compressobj(1, zlib.DEFLATED, 9, 1)
    return packer.compress(data) + packer.flush()


def _slots(commands: Sequence[tuple[Any, ...]], encode: Callable[[Any], bytes]) -> list[Slot]:
    slots: list[Slot] = []
    constant: list[bytes] = []

    def hole(slot: str) -> None:
        slots.append(b"".join(constant))
        constant.clear()
        slots.append(slot)

    for command in commands:
        constant.append(b"%d:" % len(command))
        hset = str(command[0]).upper() == "HSET"
        field = b""  # HSET key field value field value ...: the field a value belongs to
        for index, part in enumerate(command):
            raw = part if isinstance(part, bytes) else encode(part)
            if hset and index >= 3 and index % 2 == 1 and field in _PER_JOB:
                hole(field.decode())
            elif _ID.encode() in raw:
                hole("id:" + raw.decode())
            elif _ARG.encode() in raw:
                raise TemplateError(f"RQ wrote the job's argument outside its data: {command[0]}")
            else:
                constant += (b"%d:" % len(raw), raw)
            field = raw if hset and index >= 2 and index % 2 == 0 else b""
    slots.append(b"".join(constant))
    if not any(slot == "data" for slot in slots):
        raise TemplateError("RQ's enqueue wrote no job data")
    return slots
