"""The playground page shows meshbot's emoji as Slack does: every ``:name:`` meshbot's
rendering writes has a picture in the page's renderer (else the page shows ``:ship:``)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_emoji_meshbot_writes_is_drawn_by_the_page() -> None:
    written = {name for path in (ROOT / "rendering").glob("*.py")
               for name in re.findall(r":([a-z][a-z0-9_+-]*):", path.read_text())}
    table = (ROOT / "playground/web/static/render.js").read_text()
    drawn = set(re.findall(r'(?:^|[{,\s])"?([a-z0-9_+-]+)"?: "', table))
    assert written, "found no emoji in rendering/"
    assert sorted(written - drawn) == []
