// Slack's mrkdwn and Block Kit, rendered as Slack shows them (enough for what meshbot posts).
"use strict";

const EMOJI = {
  white_check_mark: "✅", x: "❌", rewind: "⏪", rotating_light: "🚨", warning: "⚠️",
  syringe: "💉", hourglass_flowing_sand: "⏳", hourglass: "⌛", floppy_disk: "💾",
  recycle: "♻️", unlock: "🔓", lock: "🔒", twisted_rightwards_arrows: "🔀",
  snowflake: "❄️", raised_hand: "✋", pause_button: "⏸️", no_entry: "⛔", mirror: "🪞",
  ledger: "📒", large_blue_circle: "🔵", large_yellow_circle: "🟡", large_green_circle: "🟢",
  red_circle: "🔴", information_source: "ℹ️", wrench: "🔧", sunny: "☀️", scissors: "✂️",
  rocket: "🚀", mag: "🔍", left_right_arrow: "↔️", eyes: "👀", double_vertical_bar: "⏸️",
  bar_chart: "📊", chart_with_downwards_trend: "📉", white_circle: "⚪", green_circle: "🟢",
  arrows_counterclockwise: "🔄", octagonal_sign: "🛑", traffic_light: "🚦", memo: "📝", arrow_up: "⬆️", arrow_forward: "▶️", chart_with_upwards_trend: "📈",
  heavy_check_mark: "✔️", "+1": "👍", "-1": "👎", tada: "🎉", fire: "🔥", question: "❓",
  stop_sign: "🛑", shield: "🛡️", clipboard: "📋", bell: "🔔", skull: "💀",
  ship: "🚢", grey_question: "❔", leftwards_arrow_with_hook: "↩️", link: "🔗", repeat: "🔁",
  robot_face: "🤖",
};

function esc(s) {
  return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
}

function emoji(name) {
  return EMOJI[name] || `:${name}:`;
}

// Slack escapes only &, < and > in text; everything else is literal.
function unslack(s) {
  return s.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");
}

function reference(inner, users, channels) {
  const bar = inner.indexOf("|");
  const ref = bar < 0 ? inner : inner.slice(0, bar);
  const label = bar < 0 ? "" : inner.slice(bar + 1);
  if (ref.startsWith("@")) {
    const id = ref.slice(1);
    return `<span class="mention">@${esc(label || users[id] || id)}</span>`;
  }
  if (ref.startsWith("#")) {
    const id = ref.slice(1);
    return `<span class="mention">#${esc(label || channels[id] || id)}</span>`;
  }
  if (ref.startsWith("!")) {
    return `<span class="mention">${esc(label || "@" + ref.slice(1).split("^")[0])}</span>`;
  }
  const permalink = ref.match(/^https:\/\/[^/]+\.slack\.com\/archives\/[^/]+\/p(\d+)(\d{6})/);
  if (permalink) {
    // A Slack permalink: this page is the channel, so it jumps to the message here.
    const ts = `${permalink[1]}.${permalink[2]}`;
    return `<a href="#" class="permalink" data-goto="${ts}">${esc(label || "message")}</a>`;
  }
  if (/^(https?|mailto):/.test(ref)) {
    return `<a href="${esc(ref)}" target="_blank" rel="noopener noreferrer">${esc(label || ref)}</a>`;
  }
  return esc(`<${inner}>`);
}

function inline(s) {
  // s is already HTML-escaped plain text (no references, no code).
  return s
    .replace(/(^|[\s(>"'])\*([^*\n]+?)\*(?=$|[\s).,:;!?<"'])/g, "$1<b>$2</b>")
    .replace(/(^|[\s(>"'])_([^_\n]+?)_(?=$|[\s).,:;!?<"'])/g, "$1<i>$2</i>")
    .replace(/(^|[\s(>"'])~([^~\n]+?)~(?=$|[\s).,:;!?<"'])/g, "$1<s>$2</s>")
    .replace(/:([a-z0-9_+-]+):/g, (m, name) => (EMOJI[name] ? EMOJI[name] : m));
}

// mrkdwn to HTML: ```blocks```, `code`, <references>, *bold*, _italic_, ~strike~, :emoji:.
function mrkdwn(text, ctx) {
  const users = (ctx && ctx.users) || {};
  const channels = (ctx && ctx.channels) || {};
  const out = [];
  const parts = String(text || "").split("```");
  parts.forEach((part, i) => {
    if (i % 2 === 1) {
      out.push(`<pre class="code">${esc(unslack(part.replace(/^\n/, "")))}</pre>`);
      return;
    }
    const pieces = part.split(/(`[^`\n]+`|<[^<>\n]+>)/g);
    // Code and references stand in as placeholders while *bold* and the like are read, so a
    // bold span may hold a code span (`*Migration of `ns`: done*`), as Slack renders it.
    const held = [];
    let line = "";
    for (const piece of pieces) {
      if (piece.startsWith("`") && piece.endsWith("`") && piece.length > 1) {
        held.push(`<code>${esc(unslack(piece.slice(1, -1)))}</code>`);
        line += `\u0000${held.length - 1}\u0000`;
      } else if (piece.startsWith("<") && piece.endsWith(">")) {
        held.push(reference(piece.slice(1, -1), users, channels));
        line += `\u0000${held.length - 1}\u0000`;
      } else {
        line += esc(unslack(piece));
      }
    }
    line = inline(line).replace(/\u0000(\d+)\u0000/g, (m, i) => held[Number(i)]);
    out.push(line.replace(/\n/g, "<br>"));
  });
  return out.join("");
}

function textObject(obj, ctx) {
  if (!obj) return "";
  if (obj.type === "plain_text") return esc(obj.text || "").replace(/:([a-z0-9_+-]+):/g,
    (m, n) => (obj.emoji !== false && EMOJI[n] ? EMOJI[n] : m));
  return mrkdwn(obj.text || "", ctx);
}

// Block Kit: header, section (text, fields), context, divider, image, actions, rich_text.
function blocks(list, ctx) {
  const html = [];
  for (const b of list || []) {
    if (b.type === "header") {
      html.push(`<div class="bk-header">${textObject(b.text, ctx)}</div>`);
    } else if (b.type === "section") {
      let s = b.text ? `<div class="bk-text">${textObject(b.text, ctx)}</div>` : "";
      if (b.fields) {
        s += `<div class="bk-fields">${b.fields.map((f) =>
          `<div>${textObject(f, ctx)}</div>`).join("")}</div>`;
      }
      html.push(`<div class="bk-section">${s}</div>`);
    } else if (b.type === "context") {
      html.push(`<div class="bk-context">${(b.elements || []).map((e) =>
        e.type === "image" ? "" : `<span>${textObject(e, ctx)}</span>`).join(" ")}</div>`);
    } else if (b.type === "divider") {
      html.push('<hr class="bk-divider">');
    } else if (b.type === "image") {
      html.push(`<div class="bk-context">[image: ${esc(b.alt_text || "")}]</div>`);
    } else if (b.type === "actions") {
      html.push(`<div class="bk-actions">${(b.elements || []).map((e) =>
        `<button type="button" disabled>${textObject(e.text, ctx)}</button>`).join("")}</div>`);
    }
  }
  return html.join("");
}

// A message's body: its blocks when it has any (as Slack shows them), else its text.
function body(message, ctx) {
  const fromBlocks = message.blocks && message.blocks.length ? blocks(message.blocks, ctx) : "";
  return fromBlocks || mrkdwn(message.text, ctx);
}

function clock(ts) {
  const d = new Date(parseFloat(ts) * 1000);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

window.Render = { esc, emoji, mrkdwn, blocks, body, clock };
