"""The Dockerfile, checked by a small parser (no Docker engine on the test machines)."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|cc|make|build-essential|clang|python3?-dev|libc6?-dev)\b")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with line continuations joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"

    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "FROM":
            words = rest.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(image, name))
        elif not stages:
            assert keyword == "ARG", f"only ARG may precede the first FROM, not {keyword}"
            key, _, default = rest.partition("=")
            args[key] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse((ROOT / "Dockerfile").read_text())[1]


def test_multi_stage_on_slim_python(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    assert stages[0].name == "builder"
    assert all(stage.base == "python:3.11-slim" for stage in stages)


def test_builder_wheels_the_project(stages: list[Stage]) -> None:
    runs = " ".join(stages[0].all("RUN"))
    assert "pip wheel" in runs and "/wheels" in runs


def test_final_stage_installs_only_the_builders_wheels(stages: list[Stage]) -> None:
    final = stages[-1]
    installs = [run for run in final.all("RUN") if "pip install" in run]
    assert len(installs) == 1
    assert "from=builder" in installs[0] and "--no-index" in installs[0]
    # Nothing but the wheels crosses from the builder (no sources, no compilers).
    assert all("--from" not in copy for copy in final.all("COPY"))


def test_no_build_tools_in_the_final_stage(stages: list[Stage]) -> None:
    for run in stages[-1].all("RUN"):
        assert "apt-get install" not in run and "apk add" not in run, run
        assert not BUILD_TOOLS.search(run), run


def test_runs_as_a_fixed_non_root_user(stages: list[Stage]) -> None:
    final = stages[-1]
    users = final.all("USER")
    assert users, "the final stage must set USER"
    uid = users[-1].split(":")[0]
    # Numeric, so the kubelet can verify runAsNonRoot without reading /etc/passwd.
    assert uid == "10001"
    assert "--uid 10001" in " ".join(final.all("RUN"))
    keywords = [kw for kw, _ in final.instructions]
    # Nothing after USER runs as root again.
    assert "RUN" not in keywords[keywords.index("USER") :]


def test_meshbot_is_the_entrypoint(stages: list[Stage]) -> None:
    final = stages[-1]
    assert [json.loads(e) for e in final.all("ENTRYPOINT")] == [["meshbot"]]
    assert [json.loads(c) for c in final.all("CMD")] == [["serve"]]
    assert "3000" in " ".join(final.all("EXPOSE")).split()


def test_builder_copies_every_packaged_package(stages: list[Stage]) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    packages.discard("playground")  # the local stand-ins stay out of the image
    sources = {
        word.strip("/").removeprefix("./")
        for copy in stages[0].all("COPY")
        for word in copy.split()[:-1]
        if not word.startswith("--")
    }
    assert packages <= sources
    assert "playground" not in sources
    assert "pyproject.toml" in sources
    # setuptools reads the readme named in pyproject while building the wheel.
    assert project["project"]["readme"] in sources
    for package in packages:
        assert (ROOT / package).is_dir(), package


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "tests", "helm"} <= ignored
    # The build needs these: ignoring them would break `pip wheel .`.
    assert not {"pyproject.toml", "README.md", "meshbot", "jobs"} & ignored
