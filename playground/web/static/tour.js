// The guided tour: canary → status → promote → two approvals → a canary broken → rollback →
// the runbook's phase 2 as a migration thread.
// Every step is a real command (or reaction, or traffic change) sent as the page sends yours.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const P = () => window.Page;
  const svc = (name) => P().page.state.mesh.find((s) => s.service === name) || {};
  const weights = (name) => ((svc(name).managed || {}).weights) || {};
  const roots = () => P().page.state.channel;
  const person = (role, n) => P().page.setup.people.filter((p) => p.role === role)[n || 0].id;
  const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function waitFor(what, test, seconds) {
    const deadline = Date.now() + seconds * 1000;
    while (Date.now() < deadline) {
      await P().poll();
      const found = test();
      if (found) return found;
      await pause(400);
    }
    throw new Error(`not within ${seconds}s: ${what}`);
  }

  const approval = () => roots().slice().reverse().find(
    (m) => m.text.includes("Approval needed") && m.text.includes("promote"));
  const passed = (name) => ((svc(name).rollout || {}).passed_checks || 0) >= 1;
  const migration = (words) => roots().some((t) => t.text.includes("*Migration*") &&
    t.replies.some((r) => r.text.includes(words)));
  const inThread = (name, words) => roots().some((t) => t.text.includes(name) &&
    t.replies.some((r) => r.text.includes(words)));

  const STEPS = [
    { say: "You are <b>@alex</b>, an operator. First: send 10 % of payment-service's traffic " +
        "to its canary. <code>/mesh canary payment-service 10</code>",
      run: async () => {
        P().chooseUser(person("operator")); P().selectService("payment-service");
        await P().send("canary payment-service 10");
        await waitFor("weights 90/10", () => weights("payment-service").canary === 10, 30);
      },
      done: "meshbot answered you alone, opened a thread, and wrote 90/10 into the " +
        "VirtualService (the mesh panel). The canary's checks run every few seconds." },
    { say: "Ask where it stands: <code>/mesh status payment-service</code>",
      run: async () => {
        await P().send("status payment-service");
        await waitFor("the status message", () => roots().some(
          (m) => m.text.includes("Status") && m.text.includes("payment-service")), 20);
      },
      done: "The status is posted in the channel: weights, phase, the last measurements." },
    { say: "Promote it: all traffic to the canary. payment-service is <b>critical</b>: " +
        "a promote needs two approvers. <code>/mesh promote payment-service</code>",
      run: async () => {
        await waitFor("a passed check to promote on", () => passed("payment-service"), 60);
        await P().send("promote payment-service");
        await waitFor("the approval request", approval, 20);
      },
      done: "meshbot posted an approval request and waits for two ✅ from approvers." },
    { say: "Become <b>@priya</b>, an approver, and click ✅ under the request.",
      run: async () => {
        P().chooseUser(person("approver", 0));
        await P().react(approval().ts, P().page.setup.approve_emoji);
        await waitFor("priya's ✅", () => approval().reactions.length > 0, 10);
      },
      done: "One approval counted; one more is needed." },
    { say: "Become <b>@jordan</b>, a second approver, and click ✅ too.",
      run: async () => {
        P().chooseUser(person("approver", 1));
        await P().react(approval().ts, P().page.setup.approve_emoji);
        await waitFor("the promote", () => weights("payment-service").canary === 100, 30);
      },
      done: "Quorum: meshbot re-checked and promoted. The canary subset is now live (0/100)." },
    { say: "Back as <b>@alex</b>: a canary of user-service at 25 %. " +
        "<code>/mesh canary user-service 25</code>",
      run: async () => {
        P().chooseUser(person("operator")); P().selectService("user-service");
        await P().send("canary user-service 25");
        await waitFor("weights 75/25", () => weights("user-service").canary === 25, 30);
        await waitFor("a healthy check", () => passed("user-service"), 60);
      },
      done: "Applied, and a first check passed: the canary is as healthy as stable." },
    { say: "Break it: the traffic generator makes user-service's canary answer 503 to 30 % " +
        "of its requests. Watch the error chart, then the thread.",
      run: async () => {
        await P().setCanary("user-service", 0.3, 40);
        await waitFor("the automatic rollback", () => weights("user-service").canary === 0 &&
          inThread("user-service", "Automatic rollback"), 90);
      },
      done: "meshbot saw the canary fail its checks and rolled back on its own: 100/0, " +
        "the reason and a chart in the thread. The canary still answers 30 % errors: set 0 % " +
        "and Apply before trying it again." },
    { say: "Last, the runbook's migration: move the pilot services onto the mesh, one at a " +
        "time (sidecar injected, rollout complete, pods answering). " +
        "<code>/mesh migrate production phase=2</code>",
      run: async () => {
        P().chooseUser(person("operator"));
        await P().send("migrate production phase=2");
        await waitFor("the migration to end", () => migration(": done*") ||
          migration(": stopped*"), 120);
        if (!migration(": done*")) throw new Error("the migration stopped: see its thread");
      },
      done: "One thread for the whole phase: the plan, each pilot service injected in turn, " +
        "and a status message edited in place until it said done. That is the tour: now try " +
        "your own commands." },
  ];

  let at = 0;
  function show(html) { $("tour-step").innerHTML = html; }
  function open() {
    at = 0;
    $("tour-box").hidden = false;
    $("tour-next").disabled = false;
    $("tour-next").textContent = "Run step 1";
    show(`<b>Step 1/${STEPS.length}.</b> ${STEPS[0].say}`);
  }
  async function next() {
    if (at >= STEPS.length) { $("tour-box").hidden = true; return; }
    const step = STEPS[at];
    $("tour-next").disabled = true;
    show(`<b>Step ${at + 1}/${STEPS.length}.</b> ${step.say}<div class="muted">running …</div>`);
    try {
      await step.run();
    } catch (e) {
      show(`<b>Step ${at + 1}</b> did not finish: ${window.Render.esc(e.message)}`);
      $("tour-next").disabled = false;
      return;
    }
    at += 1;
    const upcoming = at < STEPS.length
      ? `<div class="tour-next-say"><b>Next (${at + 1}/${STEPS.length}):</b> ${STEPS[at].say}</div>`
      : "";
    show(`<div class="tour-done">✔ ${step.done}</div>${upcoming}`);
    $("tour-next").textContent = at < STEPS.length ? `Run step ${at + 1}` : "Finish";
    $("tour-next").disabled = false;
  }
  $("tour").addEventListener("click", open);
  $("tour-next").addEventListener("click", next);
  $("tour-close").addEventListener("click", () => { $("tour-box").hidden = true; });
})();
