"""Value types shared by the policy models: durations, percentages, Slack and Kubernetes names.

Each type validates itself and raises ``PydanticCustomError`` with a ``fix`` in its context, so
the loader can tell the operator how to repair the file, not only what is wrong.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from policies.links import PLACEHOLDERS, unknown_placeholders

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_VS_REF = re.compile(rf"({DNS_LABEL.pattern}/)?{_DNS_SUBDOMAIN.pattern}")
_SLACK_MEMBER = re.compile(r"[UWS][A-Z0-9]{2,}")
_SLACK_CHANNEL = re.compile(r"[CG][A-Z0-9]{2,}")
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_EMOJI = re.compile(r"[a-z0-9_+'-]+")
_LABEL_KEY = re.compile(
    r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
)


def invalid(problem: str, fix: str) -> PydanticCustomError:
    """A validation error whose context carries ``fix``, lifted by the loader into the problem."""
    # The problem is formatted here, not by pydantic's template engine, which knows no ``!r``.
    return PydanticCustomError("policy_value", problem, {"fix": fix})


def parse_duration(value: object) -> float:
    """``"30s"``, ``"1m"``, ``"1h30m"``, ``"250ms"`` or a bare number (seconds) -> seconds."""
    fix = 'write a positive duration with a unit, e.g. "30s", "1m", "10m" or "1h"'
    if isinstance(value, bool):
        # YAML turns ``yes``/``on`` into booleans; never read them as 1 second.
        raise invalid("expected a duration, got a boolean", fix)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if not _DURATION_WHOLE.fullmatch(text):
            raise invalid(f"{value!r} is not a duration", fix)
        seconds = sum(
            float(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PART.findall(text)
        )
    else:
        raise invalid(f"expected a duration, got {type(value).__name__}", fix)
    if not math.isfinite(seconds) or seconds <= 0:
        raise invalid("a duration must be positive and finite", fix)
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest spelling of ``seconds`` that ``parse_duration`` reads back."""
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        if seconds >= size and float(seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    # Fixed-point: ``:g`` would write 1e+06, which is not a duration.
    return f"{seconds:.6f}".rstrip("0").rstrip(".") + "s"


def _matching(pattern: re.Pattern[str], what: str, fix: str) -> Any:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise invalid(f"{value!r} is not {what}", fix)
        return value

    return AfterValidator(check)


def _pattern(pattern: re.Pattern[str]) -> WithJsonSchema:
    # The AfterValidator above is invisible to the JSON Schema; state the same rule there.
    return WithJsonSchema({"type": "string", "pattern": f"^(?:{pattern.pattern})$"})


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": DURATION_PATTERN},
                {"type": "number", "exclusiveMinimum": 0},
            ],
            "description": 'a duration such as "30s", "1m", "10m", "1h" (a number is seconds)',
        }
    ),
]
Percent = Annotated[float, Field(ge=0, le=100)]
Count = Annotated[int, Field(ge=0, le=20)]

DnsLabel = Annotated[
    str,
    _matching(
        DNS_LABEL,
        "a DNS-1123 label",
        "use lower-case letters, digits and '-', start and end with a letter or digit, "
        "at most 63 characters (e.g. payment-service)",
    ),
    _pattern(DNS_LABEL),
]
# A caller of a service, as an AuthorizationPolicy names it: a principal, or a namespace.
_CALLER = re.compile(r"([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/ns/[a-z0-9]([-a-z0-9]{0,61}"
                     r"[a-z0-9])?/sa/[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?)|" + DNS_LABEL.pattern)
Caller = Annotated[
    str,
    _matching(
        _CALLER,
        "a principal or a namespace",
        "write a principal as cluster.local/ns/<namespace>/sa/<service account>, or a "
        "namespace name (e.g. frontend)",
    ),
    _pattern(_CALLER),
]
VirtualServiceRef = Annotated[
    str,
    _matching(
        _VS_REF,
        "a VirtualService name",
        "write the VirtualService's name, or namespace/name when it lives in another "
        "namespace (e.g. istio-system/payment-gateway)",
    ),
    _pattern(_VS_REF),
]
SlackMember = Annotated[
    str,
    _matching(
        _SLACK_MEMBER,
        "a Slack user or user-group ID",
        "use a Slack user ID (U… or W…) or user-group ID (S…), not a name or @handle; "
        "copy it from the person's profile (⋮ → Copy member ID)",
    ),
    _pattern(_SLACK_MEMBER),
]
SlackChannel = Annotated[
    str,
    _matching(
        _SLACK_CHANNEL,
        "a Slack channel ID",
        "use the channel ID (C…, or G… for old private channels), not #name; "
        "it is at the bottom of the channel's details",
    ),
    _pattern(_SLACK_CHANNEL),
]
Name = Annotated[
    str,
    _matching(
        _NAME,
        "a valid name",
        "start with a lower-case letter; use lower-case letters, digits, '-' and '_'",
    ),
    _pattern(_NAME),
]
Emoji = Annotated[
    str,
    _matching(
        _EMOJI, "an emoji name", "write the emoji's name without colons, e.g. white_check_mark"
    ),
    _pattern(_EMOJI),
]
LabelKey = Annotated[
    str,
    _matching(_LABEL_KEY, "a Kubernetes label key", "write a label key such as version or app"),
    _pattern(_LABEL_KEY),
]


def _strictly_increasing(values: list[Any]) -> list[Any]:
    if any(later <= earlier for earlier, later in itertools.pairwise(values)):
        raise invalid(
            f"values must be strictly increasing, got {values}",
            "list each value once, smallest first (e.g. [5, 10, 25, 50])",
        )
    return values


Weight = Annotated[int, Field(ge=0, le=100)]
Step = Annotated[int, Field(ge=1, le=99)]
Steps = Annotated[list[Step], Field(min_length=1), AfterValidator(_strictly_increasing)]
Windows = Annotated[list[Duration], Field(min_length=1), AfterValidator(_strictly_increasing)]


def _link_template(value: str) -> str:
    known = ", ".join("{" + name + "}" for name in PLACEHOLDERS)
    if not value.startswith(("https://", "http://")):
        raise invalid(f"{value!r} is not an http(s) URL", "write a URL template such as "
                      "https://grafana.example/d/istio?var-service={service}")
    try:
        unknown = unknown_placeholders(value)
    except ValueError:
        raise invalid(f"{value!r} has an unbalanced brace",
                      f"write placeholders as {{name}}; known: {known}") from None
    if unknown:
        raise invalid(f"unknown placeholder {{{unknown[0]}}} in {value!r}",
                      f"use only {known}")
    return value


LinkTemplate = Annotated[str, AfterValidator(_link_template)]


def _http_url(value: str) -> str:
    if not value.startswith(("https://", "http://")) or len(value) < 10 or " " in value:
        raise invalid(f"{value!r} is not an http(s) URL",
                      "write a URL such as http://prometheus.istio-system:9090")
    return value


HttpUrlText = Annotated[str, AfterValidator(_http_url)]
