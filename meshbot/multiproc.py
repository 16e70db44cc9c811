"""Shared metric files for ``meshbot serve``'s several gunicorn worker processes.

Each gunicorn worker counts its own requests; a scrape reaches one worker at random. With
prometheus_client's multiprocess mode every process writes its samples to memory-mapped files in
one directory and ``/metrics`` (in whichever worker answers) merges them, so the counters are
the sum over all workers, past and present.

prometheus_client chooses that mode once, when it is first imported, from the
``PROMETHEUS_MULTIPROC_DIR`` environment variable: so this module must not import it, and
``use_shared_metric_files`` must run before anything else does.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


@dataclass(frozen=True)
class SharedMetricFiles:
    directory: Path
    created: bool  # by us (a temp dir), not given by the operator

    def remove(self) -> None:
        """At exit: a directory we created goes; an operator's stays, emptied."""
        if self.created:
            shutil.rmtree(self.directory, ignore_errors=True)
        else:
            for leftover in self.directory.glob("*.db"):
                leftover.unlink(missing_ok=True)


def use_shared_metric_files() -> SharedMetricFiles:
    """Point prometheus_client at an empty directory (the operator's, else a new temp one).

    Files left by an earlier run are removed: their counters belong to processes long gone and
    would be added to ours.
    """
    if "prometheus_client" in sys.modules:
        raise RuntimeError(
            "prometheus_client was imported before the shared metric files were set up: "
            "/metrics would count one gunicorn worker only"
        )
    given = os.environ.get(ENV)
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        for leftover in directory.glob("*.db"):
            leftover.unlink()
    else:
        # /tmp is the one writable place in the chart's read-only root filesystem.
        directory = Path(tempfile.mkdtemp(prefix="meshbot-metrics-"))
    os.environ[ENV] = str(directory)
    return SharedMetricFiles(directory, created=not given)
