"""The playground page in a real browser (Debian's chromium, driven by Playwright).

The whole playground runs as ``meshbot demo`` runs it — Redis, the Kubernetes emulator, the
Slack stand-in, the traffic generator, a real Prometheus, real ``meshbot serve`` and ``meshbot
worker`` — and the page is used as a person would: pick who you are, type ``/mesh …``, click an
emoji, break the canary on the traffic panel. Every wait is Playwright's, on a condition, with a
deadline. ``MESHBOT_PAGE_SCREENSHOTS=DIR`` saves the README's screenshots from the tour.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from playground.prometheus_server import find_binary
from playground.sample_mesh import TIERS
from playground.web.live import Playground, live_playground
from playground.web.server import PageServer

playwright_api = pytest.importorskip("playwright.sync_api")
expect, Page = playwright_api.expect, playwright_api.Page

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
OPERATOR, OUTSIDER = "U0OPERATOR1", "U0OUTSIDER1"
APPROVER_1, APPROVER_2, APPROVER_3 = "U0APPROVER1", "U0APPROVER2", "U0APPROVER3"
# A check every 4 s; a first passed check, or an automatic rollback, takes a few of them.
STEP_MS = 30_000
ANALYSIS_MS = 90_000

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium"),
]


def _needs_prometheus() -> None:
    try:
        find_binary()
    except Exception as exc:  # pragma: no cover - the Makefile installs it
        pytest.skip(f"needs prometheus: {exc}")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    with playwright_api.sync_playwright() as driver:
        context = driver.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM,
            args=CHROMIUM_ARGS, headless=True, viewport={"width": 1400, "height": 900})
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Playground, str]]:
    _needs_prometheus()
    with live_playground(tmp_path_factory.mktemp("playground")) as playground, \
            PageServer(playground) as page:
        yield playground, page.url


def open_page(browser: object, url: str) -> Page:
    page: Page = browser.new_page()  # type: ignore[attr-defined]
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    expect(page.locator("body[data-ready=yes]")).to_be_attached(timeout=STEP_MS)
    page.errors = errors  # type: ignore[attr-defined]
    return page


def be(page: Page, user: str) -> None:
    page.select_option("#user", user)


def mesh(page: Page, text: str) -> None:
    page.fill("#text", text)
    page.click("#send")
    expect(page.locator("#text")).to_have_value("", timeout=STEP_MS)


def weights(page: Page, service: str) -> object:
    return expect(page.locator(f"#svc-{service} [data-weights]"))


def thread_of(page: Page, words: str) -> object:
    return page.locator(".thread").filter(has=page.locator(".msg:not(.reply)", has_text=words))


def wait_for_a_passed_check(page: Page, service: str) -> None:
    expect(page.locator(f"#svc-{service} .phase")).to_contain_text(
        re.compile(r"[1-9]\d* passed"), timeout=ANALYSIS_MS)


def test_an_operator_starts_a_canary_and_sees_the_thread_and_the_weights(
        site: tuple[Playground, str], browser: object) -> None:
    page = open_page(browser, site[1])
    weights(page, "payment-service").to_have_text("stable 100 / canary 0")
    be(page, OPERATOR)
    mesh(page, "canary payment-service 10")
    # Only the caller sees the ack; everyone sees the thread.
    expect(page.locator(".ephemeral", has_text="Accepted")).to_contain_text(
        "canary payment-service 10", timeout=STEP_MS)
    thread = thread_of(page, "Canary payment-service")
    expect(thread.locator(".msg:not(.reply) .mention")).to_have_text("@alex")
    expect(thread.locator(".reply")).to_contain_text(
        "Weights applied on payment-service: now stable 90 / canary 10", timeout=STEP_MS)
    weights(page, "payment-service").to_have_text("stable 90 / canary 10", timeout=STEP_MS)
    # mrkdwn rendered: the service name in code, never a raw backtick or <@U…>.
    expect(thread.locator(".reply code").first).to_have_text("payment-service")
    assert "<@" not in thread.inner_text() and "`" not in thread.inner_text()
    assert page.errors == []  # type: ignore[attr-defined]


def test_a_critical_promote_waits_for_two_approvers_clicking(
        site: tuple[Playground, str], browser: object) -> None:
    page = open_page(browser, site[1])
    be(page, OPERATOR)
    mesh(page, "canary order-service 10")
    weights(page, "order-service").to_have_text("stable 90 / canary 10", timeout=STEP_MS)
    wait_for_a_passed_check(page, "order-service")
    mesh(page, "promote order-service")
    request = page.locator(".msg", has_text="Approval needed").filter(has_text="order-service")
    expect(request).to_contain_text("promote order-service", timeout=STEP_MS)
    approve = request.locator("button[data-name=white_check_mark]")
    # A third approver reacts, then thinks better of it: reaction_added, then reaction_removed.
    be(page, APPROVER_3)
    approve.click()
    expect(request.locator("button.reaction.mine")).to_contain_text("1", timeout=STEP_MS)
    request.locator("button.reaction.mine").click()
    expect(request.locator("button.reaction")).to_have_count(0, timeout=STEP_MS)
    for approver, count in ((APPROVER_1, "1"), (APPROVER_2, "2")):
        be(page, approver)
        approve.click()
        if count == "1":
            expect(request.locator("button.reaction.mine")).to_contain_text(count,
                                                                            timeout=STEP_MS)
            weights(page, "order-service").to_have_text("stable 90 / canary 10")
    weights(page, "order-service").to_have_text("stable 0 / canary 100", timeout=STEP_MS)
    expect(thread_of(page, "Canary order-service").locator(".reply", has_text="Promoted")
           ).to_be_visible(timeout=STEP_MS)


def test_a_broken_canary_is_rolled_back_with_its_chart(
        site: tuple[Playground, str], browser: object) -> None:
    page = open_page(browser, site[1])
    be(page, OPERATOR)
    mesh(page, "canary user-service 25")
    weights(page, "user-service").to_have_text("stable 75 / canary 25", timeout=STEP_MS)
    wait_for_a_passed_check(page, "user-service")
    page.click("#svc-user-service")
    expect(page.locator("#detail-title")).to_have_text("user-service")
    page.fill("#error-rate", "30")
    page.click("#apply-traffic")
    expect(page.locator("#traffic-now")).to_contain_text("canary answers 30 % errors",
                                                        timeout=STEP_MS)
    thread = thread_of(page, "Canary user-service")
    expect(thread.locator(".reply", has_text="Automatic rollback of user-service")
           ).to_be_visible(timeout=ANALYSIS_MS)
    weights(page, "user-service").to_have_text("stable 100 / canary 0", timeout=STEP_MS)
    chart = thread.locator("figure.file img")
    expect(chart).to_be_visible(timeout=STEP_MS)
    assert chart.evaluate("img => img.naturalWidth") > 100
    # The canary's errors are on the page's chart too, from the real Prometheus.
    expect(page.locator(".chart", has_text="error ratio").locator(
        "[data-metric-value=canary]")).not_to_have_text("0.00 %")


def test_an_outsiders_command_is_refused_and_only_they_see_it(
        site: tuple[Playground, str], browser: object) -> None:
    page = open_page(browser, site[1])
    be(page, OUTSIDER)
    mesh(page, "canary logging-service 10")
    refusal = page.locator(".ephemeral", has_text="Refused")
    expect(refusal).to_contain_text("@visitor may not run /mesh canary", timeout=STEP_MS)
    be(page, OPERATOR)
    # The visitor's refusal, not any refusal: the operator may have had their own answers in
    # this page's shared playground (another test's "Refused: … has no rollout to promote").
    expect(page.locator(".ephemeral", has_text="@visitor may not run /mesh canary")
           ).to_have_count(0, timeout=STEP_MS)
    weights(page, "logging-service").to_have_text("stable 100 / canary 0")
    assert not any("logging-service" in text for text in page.locator(".thread").all_inner_texts())


def test_a_workers_later_answer_reaches_the_caller_alone(
        site: tuple[Playground, str], browser: object) -> None:
    page = open_page(browser, site[1])
    be(page, OPERATOR)
    mesh(page, "promote analytics-service")
    # Accepted at once by the bot; the worker finds no rollout and says so on the response_url.
    answer = page.locator(".ephemeral", has_text="promote analytics-service")
    expect(answer).to_contain_text("analytics-service has no rollout to promote",
                                   timeout=STEP_MS)
    be(page, APPROVER_1)
    expect(page.locator(".ephemeral", has_text="analytics-service")).to_have_count(
        0, timeout=STEP_MS)


def test_meshbot_demo_serves_the_page_until_interrupted(tmp_path: Path) -> None:
    _needs_prometheus()
    demo = subprocess.Popen(
        [sys.executable, "-m", "meshbot.cli", "demo", "--port", "0", "--workdir",
         str(tmp_path / "demo")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={k: v for k, v in os.environ.items() if k != "MESHBOT_POLICY"},
        # Its own process group, so nothing it started outlives the test; and SIGINT ignored,
        # as a background job or nohup starts it: Ctrl-C must stop it all the same.
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        assert demo.stdout is not None
        printed: list[str] = []
        for line in demo.stdout:  # ends when the demo exits; bounded by the test's timeout
            printed.append(line)
            if "open  http://127.0.0.1:" in line:
                break
        url = printed[-1].split("open", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:"), "".join(printed)
        with urllib.request.urlopen(f"{url}api/setup", timeout=10) as answer:
            assert json.load(answer)["channel"]["name"] == "mesh-ops"
        with urllib.request.urlopen(url, timeout=10) as answer:
            assert "Guided tour" in answer.read().decode()
        demo.send_signal(signal.SIGINT)
        try:
            rest, _ = demo.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError(_still_stopping(demo.pid, tmp_path / "demo")) from None
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.communicate(timeout=10)
    assert demo.returncode == 0, "".join(printed) + rest
    assert "Stopped every process the playground started." in rest


def _still_stopping(pid: int, workdir: Path) -> str:
    """What a demo that does not stop is waiting for: its children still running, and the end
    of its processes' logs."""
    children = subprocess.run(["ps", "--ppid", str(pid), "-o", "pid,etime,args"],
                              capture_output=True, text=True, check=False).stdout
    tails = [f"--- {log.name}:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
             for log in sorted(workdir.glob("*.log"))]
    return "\n".join(["the demo did not stop within 60 s of Ctrl-C; still running:", children,
                      *tails])


def test_the_page_server_takes_json_posts_only(site: tuple[Playground, str]) -> None:
    url = site[1]
    form = urllib.request.Request(f"{url}api/command", data=b"user=U0OPERATOR1&text=help",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(form, timeout=10)
    refused.value.close()
    assert refused.value.code == 415
    unknown = urllib.request.Request(f"{url}api/command", data=json.dumps(
        {"user": "U0NOBODY", "text": "help"}).encode(),
        headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as bad:
        urllib.request.urlopen(unknown, timeout=10)
    bad.value.close()
    assert bad.value.code == 400
    rebound = urllib.request.Request(f"{url}api/setup", headers={"Host": "evil.example:80"})
    with pytest.raises(urllib.error.HTTPError) as foreign:
        urllib.request.urlopen(rebound, timeout=10)
    foreign.value.close()
    assert foreign.value.code == 403


def test_the_guided_tour_plays_to_the_automatic_rollback_and_a_migration(
        tmp_path: Path, browser: object) -> None:
    _needs_prometheus()
    shots = os.environ.get("MESHBOT_PAGE_SCREENSHOTS")
    with live_playground(tmp_path / "tour") as playground, PageServer(playground) as server:
        page = open_page(browser, server.url)
        page.click("#tour")
        for step in range(1, 9):
            expect(page.locator("#tour-next")).to_have_text(f"Run step {step}",
                                                            timeout=ANALYSIS_MS)
            expect(page.locator("#tour-next")).to_be_enabled(timeout=ANALYSIS_MS)
            page.click("#tour-next")
            if step == 7 and shots:
                # During the rollback: the canary broken, its errors on the chart.
                expect(page.locator(".chart", has_text="error ratio").locator(
                    "[data-metric-value=canary]")).not_to_have_text(
                    re.compile(r"^(0\.00 %|—)$"), timeout=ANALYSIS_MS)
        expect(page.locator("#tour-next")).to_have_text("Finish", timeout=ANALYSIS_MS)
        expect(page.locator(".tour-done")).to_contain_text("status message edited in place")
        migration = thread_of(page, "Migration")
        expect(migration).to_contain_text("Migration of production: done")
        for pilot in TIERS["pilot"]:
            expect(migration).to_contain_text(pilot)
        pilots = [d for d in playground.cluster.list("apps", "v1", "deployments", "production")
                  if (d["metadata"].get("labels") or {}).get("app") in TIERS["pilot"]]
        assert pilots and all(
            (d["spec"]["template"]["metadata"].get("annotations") or {})
            .get("sidecar.istio.io/inject") == "true" for d in pilots)
        expect(thread_of(page, "Canary user-service")).to_contain_text("rolled back")
        weights(page, "user-service").to_have_text("stable 100 / canary 0")
        weights(page, "payment-service").to_have_text("stable 0 / canary 100")
        expect(thread_of(page, "Canary user-service").locator("figure.file img")).to_be_visible(
            timeout=STEP_MS)
        if shots:
            save_screenshots(page, Path(shots))
        assert page.errors == []  # type: ignore[attr-defined]


def save_screenshots(page: Page, where: Path) -> None:
    where.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1400, "height": 1080})
    page.click("#svc-user-service")
    expect(page.locator("#detail-title")).to_have_text("user-service")
    page.click("#tour-close")
    page.wait_for_function("document.querySelector('#charts .chart') !== null")
    top = ".reply:has-text('Automatic rollback of user-service')"
    page.locator(top).evaluate("m => m.scrollIntoView({block: 'start'})")
    page.screenshot(path=str(where / "playground-rollback.png"))
    page.click("#svc-payment-service")
    page.wait_for_function("document.querySelector('#charts .chart') !== null")
    top = ".thread:has-text('Canary payment-service') .msg:not(.reply)"
    page.locator(top).first.evaluate("m => m.scrollIntoView({block: 'start'})")
    page.screenshot(path=str(where / "playground-channel.png"))
    top = ".thread:has-text('Migration') .msg:not(.reply)"
    page.locator(top).first.evaluate("m => m.scrollIntoView({block: 'start'})")
    page.screenshot(path=str(where / "playground-migration.png"))
