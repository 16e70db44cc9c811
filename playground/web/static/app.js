// The playground page: polls the demo's server, renders the channel and the mesh, and sends
// what you do (a /mesh command, a click on an emoji, the canary's behaviour) to meshbot.
"use strict";

const R = window.Render;
// shown: the channel's HTML as last drawn; null when it must be drawn again whatever it is
// (an empty view for a new person must still replace the last person's private answers).
const page = { setup: null, state: null, user: "", service: "payment-service", shown: null };
const $ = (id) => document.getElementById(id);

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const response = await fetch(path, init);
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(answer.error || `${path}: HTTP ${response.status}`);
  return answer;
}

function ctx() {
  const channels = {};
  if (page.setup) channels[page.setup.channel.id] = page.setup.channel.name;
  return { users: (page.state && page.state.users) || {}, channels };
}

function person(id) {
  const p = page.setup && page.setup.people.find((x) => x.id === id);
  return p ? p.name : ((page.state && page.state.users[id]) || id);
}

function avatar(id) {
  if (id === "U0MESHBOT") return '<div class="avatar bot">⎈</div>';
  return `<div class="avatar">${R.esc(person(id).slice(0, 1).toUpperCase())}</div>`;
}

function reactions(message) {
  const ctx0 = page.setup || {};
  const names = message.reactions.map((r) => r.name);
  const offer = [ctx0.approve_emoji, ctx0.reject_emoji, "rewind"].filter(
    (n) => n && !names.includes(n));
  const pills = message.reactions.map((r) => {
    const mine = r.users.includes(page.user) ? " mine" : "";
    const who = r.users.map(person).join(", ");
    return `<button type="button" class="reaction${mine}" data-ts="${message.ts}" ` +
      `data-name="${R.esc(r.name)}" title="${R.esc(who)} reacted with :${R.esc(r.name)}:">` +
      `${R.emoji(r.name)} <span class="count">${r.users.length}</span></button>`;
  });
  const adds = offer.map((n) => `<button type="button" class="react-add" data-ts="${message.ts}"` +
    ` data-name="${R.esc(n)}" title="react with :${R.esc(n)}: as ${R.esc(person(page.user))}">` +
    `${R.emoji(n)}</button>`);
  return `<div class="reactions">${pills.join("")}${adds.join("")}</div>`;
}

function files(message) {
  return message.files.map((f) => f.image
    ? `<figure class="file"><img src="${f.url}" alt="${R.esc(f.alt || f.title)}">` +
      `<figcaption>${R.esc(f.title)}</figcaption></figure>`
    : `<a class="file" href="${f.url}">${R.esc(f.title)}</a>`).join("");
}

function messageHtml(m, isReply) {
  const edited = m.edited ? ' <span class="muted edited">(edited)</span>' : "";
  const cls = isReply ? "msg reply" : "msg";
  return `<div class="${cls}" data-ts="${m.ts}">${avatar(m.user)}<div class="msg-main">` +
    `<div class="meta"><b>${R.esc(person(m.user))}</b>${m.user === "U0MESHBOT"
      ? ' <span class="app">APP</span>' : ""} <span class="muted">${R.clock(m.ts)}</span></div>` +
    `<div class="body">${R.body(m, ctx())}${edited}</div>${files(m)}${reactions(m)}</div></div>`;
}

function threadHtml(root) {
  const replies = root.replies.length
    ? `<div class="replies"><div class="muted thread-count">${root.replies.length} ` +
      `${root.replies.length === 1 ? "reply" : "replies"}</div>` +
      `${root.replies.map((r) => messageHtml(r, true)).join("")}</div>` : "";
  return `<div class="thread" data-thread="${root.ts}">${messageHtml(root, false)}${replies}</div>`;
}

function privateHtml(p) {
  const said = p.command ? `<div class="you-typed"><b>${R.esc(person(page.user))}</b> ` +
    `<code>${R.esc(p.command)}</code></div>` : "";
  return `<div class="ephemeral"><div class="eph-head">👁 Only visible to you</div>${said}` +
    `${p.replies.map((r) => `<div class="body">${R.body(r, ctx())}</div>`).join("")}</div>`;
}

function renderChannel() {
  const s = page.state;
  const items = s.channel.map((t) => ({ at: parseFloat(t.ts), html: threadHtml(t) }))
    .concat(s.private.map((p) => ({ at: p.at, html: privateHtml(p) })))
    .sort((a, b) => a.at - b.at);
  const html = items.map((i) => i.html).join("");
  if (html === page.shown) return;
  const box = $("messages");
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  page.shown = html;
  page.empty = page.empty || $("empty").outerHTML;
  box.innerHTML = html || page.empty;
  if (atBottom) box.scrollTop = box.scrollHeight;
}

function weightsText(w) {
  return `stable ${w.stable ?? 0} / canary ${w.canary ?? 0}`;
}

function serviceHtml(svc) {
  if (svc.error) return `<div class="svc">${R.esc(svc.service)}: ${R.esc(svc.error)}</div>`;
  const w = svc.managed.weights;
  const stable = w.stable ?? 0, canary = w.canary ?? 0;
  const extras = [];
  for (const h of svc.header_routes) {
    extras.push(`<span class="tag">header ${R.esc(h.match || "")} → ` +
      `${R.esc(Object.keys(h.weights).join(", "))}</span>`);
  }
  if (svc.managed.mirror) {
    extras.push(`<span class="tag">mirror ${svc.managed.mirror.percent} % → ` +
      `${R.esc(svc.managed.mirror.subset)}</span>`);
  }
  const r = svc.rollout;
  if (r) {
    extras.push(`<span class="tag phase">${R.esc(r.phase)} · ${r.passed_checks} passed · ` +
      `failed ${r.failed_checks}/${r.failure_threshold}</span>`);
  }
  const sel = svc.service === page.service ? " selected" : "";
  return `<div class="svc${sel}" id="svc-${svc.service}" data-service="${svc.service}">` +
    `<div class="svc-head"><b>${R.esc(svc.service)}</b> <span class="tier ${svc.tier}">` +
    `${svc.tier}</span><span class="weights" data-weights>${weightsText(w)}</span></div>` +
    `<div class="bar"><span class="stable" style="width:${stable}%"></span>` +
    `<span class="canary" style="width:${canary}%"></span></div>` +
    `<div class="extras">${extras.join("")}</div></div>`;
}

function renderMesh() {
  const html = page.state.mesh.map(serviceHtml).join("");
  if (html !== page.meshShown) {
    $("services").innerHTML = html;
    page.meshShown = html;
  }
}

async function poll() {
  try {
    page.state = await api(`/api/state?user=${encodeURIComponent(page.user)}`);
    renderChannel();
    renderMesh();
  } catch (e) {
    console.warn(e);
  }
}

async function pollMetrics() {
  try {
    const data = await api(`/api/metrics?service=${encodeURIComponent(page.service)}`);
    $("charts").innerHTML = window.Charts.charts(data);
    const canary = (data.traffic.versions || {})[
      ((data.traffic.subsets || {}).canary || {}).version || "v2"];
    if (canary && !page.editing) {
      // The controls show what the generator does now (the tour, or another tab, may change it).
      $("error-rate").value = Math.round(canary.error_rate * 100);
      $("error-out").textContent = `${$("error-rate").value} %`;
      $("latency").value = Math.round(canary.latency_ms);
    }
    if (canary) {
      $("traffic-now").textContent = `now: canary answers ${(canary.error_rate * 100).toFixed(0)}` +
        ` % errors, p99 ${canary.latency_ms.toFixed(0)} ms; ${data.traffic.rps} req/s in all`;
    }
  } catch (e) {
    $("charts").innerHTML = `<div class="muted">${R.esc(e.message)}</div>`;
  }
}

async function send(text, user) {
  return api("/api/command", { user: user || page.user, text });
}

async function react(ts, name, user) {
  return api("/api/reaction", { user: user || page.user, ts, name });
}

async function setCanary(service, errorRate, latencyMs) {
  return api("/api/traffic", { service, error_rate: errorRate, latency_ms: latencyMs });
}

function chooseUser(id) {
  page.user = id;
  $("user").value = id;
  page.shown = null;
  poll();
}

function selectService(name) {
  page.service = name;
  page.editing = false;
  $("detail-title").textContent = name;
  page.meshShown = "";
  if (page.state) renderMesh();
  pollMetrics();
}

async function start() {
  page.empty = $("empty").outerHTML;
  page.setup = await api("/api/setup");
  $("channel-name").textContent = page.setup.channel.name;
  const roles = { operator: "operators", approver: "approvers", outsider: "no role" };
  const groups = {};
  for (const p of page.setup.people) (groups[p.role] = groups[p.role] || []).push(p);
  $("user").innerHTML = Object.entries(groups).map(([role, ps]) =>
    `<optgroup label="${R.esc(roles[role] || role)}">${ps.map((p) =>
      `<option value="${p.id}">@${R.esc(p.name)} — ${R.esc(p.real_name)}</option>`).join("")}` +
    "</optgroup>").join("");
  page.user = page.setup.people[0].id;
  $("user").addEventListener("change", (e) => chooseUser(e.target.value));
  $("composer").addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = $("text").value.trim();
    if (!text) return;
    $("send").disabled = true;
    try {
      await send(text);
      $("text").value = "";
    } catch (err) {
      alert(err.message);
    } finally {
      $("send").disabled = false;
      poll();
    }
  });
  $("hints").addEventListener("click", (e) => {
    const cmd = e.target.dataset && e.target.dataset.cmd;
    if (cmd) { e.preventDefault(); $("text").value = cmd; $("text").focus(); }
  });
  $("messages").addEventListener("click", async (e) => {
    const link = e.target.closest("a.permalink");
    if (link) {
      e.preventDefault();
      const target = document.querySelector(`.msg[data-ts="${link.dataset.goto}"]`);
      if (target) { target.scrollIntoView({ block: "center" }); target.classList.add("flash"); }
      return;
    }
    const button = e.target.closest("button.reaction, button.react-add");
    if (!button) return;
    button.disabled = true;
    try { await react(button.dataset.ts, button.dataset.name); } catch (err) { alert(err.message); }
    poll();
  });
  $("services").addEventListener("click", (e) => {
    const row = e.target.closest(".svc");
    if (row) selectService(row.dataset.service);
  });
  for (const id of ["error-rate", "latency"]) {
    $(id).addEventListener("input", () => { page.editing = true; });
  }
  $("error-rate").addEventListener("input", () => {
    $("error-out").textContent = `${$("error-rate").value} %`;
  });
  $("traffic").addEventListener("submit", async (e) => {
    e.preventDefault();
    page.editing = false;
    await setCanary(page.service, Number($("error-rate").value) / 100, Number($("latency").value));
    pollMetrics();
  });
  $("break").addEventListener("click", async () => {
    page.editing = false;
    $("error-rate").value = 30;
    $("error-out").textContent = "30 %";
    await setCanary(page.service, 0.3, Number($("latency").value));
    pollMetrics();
  });
  selectService(page.service);
  await poll();
  setInterval(poll, 700);
  setInterval(pollMetrics, 2000);
  document.body.dataset.ready = "yes";
}

window.Page = { page, send, react, setCanary, chooseUser, selectService, poll, api };
start();
