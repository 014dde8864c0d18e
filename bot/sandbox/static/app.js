// rotabot sandbox page: renders the stand-in's workspace like a Slack client and sends every
// command and click to the sandbox API, which forwards them to the bot as signed Slack
// requests. Plain JavaScript, no build step, nothing loaded from the network.
"use strict";

const S = {
  config: null,
  user: localStorage.getItem("rotabot-sandbox-user") || "U0ADMIN",
  nav: { kind: "channel", id: "C0ROTATE" },
  data: null,
  thread: null, // {channel, ts}
  seq: -1,
  poll: null,
  modalKey: null,
  modalErrors: {},
  lastSeen: {}, // channel id -> latest ts seen, for unread marks
};

// Shortcodes draw as the pictures of the sandbox's one emoji table (bot/sandbox/emoji.py, sent
// in /sandbox/config): an emoji character would be an empty box on a machine without an emoji
// font. A shortcode not in the table stays text, as Slack shows an unknown one.
function emoji(name) {
  const src = S.config && S.config.emoji && S.config.emoji[name];
  if (!src) return null;
  return `<img class="emo" src="${esc(src)}" alt=":${esc(name)}:" title=":${esc(name)}:" draggable="false">`;
}
const COLORS = ["#e8912d", "#2bac76", "#1d9bd1", "#e01e5a", "#7c3085", "#4a154b", "#36c5f0", "#c4302b"];

// ------------------------------------------------------------------ helpers

const $ = (sel) => document.querySelector(sel);
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "html") node.innerHTML = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}
function esc(s) {
  return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}
function userById(id) {
  return (S.data && S.data.users.find((u) => u.id === id)) || null;
}
function userName(id) {
  const p = S.config && S.config.people.find((x) => x.id === id);
  if (p) return p.real_name;
  const u = userById(id);
  return u ? (u.real_name || u.name) : id;
}
function groupHandle(id) {
  const g = S.config && S.config.usergroups[id];
  return g ? g.handle : id;
}
function channelName(id) {
  const c = S.data && S.data.channels.find((x) => x.id === id);
  return c ? c.name : id;
}
function colorFor(id) {
  let h = 0;
  for (const ch of id) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return COLORS[h % COLORS.length];
}
function timeOf(ts) {
  const d = new Date(parseFloat(ts) * 1000);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}
function toast(text, ms = 4000) {
  const t = $("#toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.hidden = true), ms);
}
function logRequest(what, reply) {
  const li = el("li");
  const ok = reply && (reply.ok || reply.sent === false);
  li.append(el("span", { class: ok ? "good" : "bad" }, reply ? (reply.status || (reply.sent === false ? "posted" : "")) : "error"), " ", what);
  if (reply && !reply.ok && reply.body) li.append(el("div", {}, reply.body.slice(0, 300)));
  if (reply && reply.error) li.append(el("div", {}, reply.error));
  const log = $("#request-log");
  log.prepend(li);
  while (log.children.length > 30) log.lastChild.remove();
}

async function api(path, body) {
  const res = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  let data = null;
  try { data = await res.json(); } catch (e) { data = { error: `HTTP ${res.status}` }; }
  if (!res.ok && !data.error) data.error = `HTTP ${res.status}`;
  return data;
}

// ------------------------------------------------------------------ mrkdwn

function mrkdwn(text) {
  if (!text) return "";
  const keep = [];
  const stash = (html) => { keep.push(html); return `\u0000${keep.length - 1}\u0000`; };
  let s = String(text);
  s = s.replace(/```([\s\S]*?)```/g, (_, code) => stash(`<pre>${esc(code.replace(/^\n/, ""))}</pre>`));
  s = s.replace(/`([^`\n]+)`/g, (_, code) => stash(`<code>${esc(code)}</code>`));
  s = s.replace(/<([^<>\n]+)>/g, (_, inner) => stash(angle(inner)));
  // Before the bold/italic rules, so a shortcode's underscores never read as _italic_.
  s = s.replace(/:([a-z0-9_+-]+):/g, (m, name) => { const img = emoji(name); return img ? stash(img) : m; });
  s = esc(s);
  s = s.replace(/(^|[\s(>])\*([^*\n]+)\*(?=$|[\s.,;:!?)<])/g, "$1<b>$2</b>");
  s = s.replace(/(^|[\s(>])_([^_\n]+)_(?=$|[\s.,;:!?)<])/g, "$1<i>$2</i>");
  s = s.replace(/(^|[\s(>])~([^~\n]+)~(?=$|[\s.,;:!?)<])/g, "$1<s>$2</s>");
  s = s.replace(/\n/g, "<br>");
  // Stashed fragments may themselves hold stash marks (code inside a link): resolve repeatedly.
  for (let i = 0; i < 3 && s.includes("\u0000"); i++) {
    s = s.replace(/\u0000(\d+)\u0000/g, (_, n) => keep[Number(n)]);
  }
  return s;
}
function angle(inner) {
  const [target, label] = splitOnce(inner, "|");
  if (target.startsWith("@U") || target.startsWith("@W")) {
    const id = target.slice(1);
    const me = id === S.user ? " me" : "";
    return `<span class="mention${me}" data-user="${esc(id)}">@${esc(userName(id))}</span>`;
  }
  if (target.startsWith("!subteam^")) {
    const id = target.slice(9);
    const members = (S.config && S.config.usergroups[id] && S.config.usergroups[id].users) || [];
    const me = members.includes(S.user) ? " me" : "";
    return `<span class="mention${me}">@${esc(label ? label.replace(/^@/, "") : groupHandle(id))}</span>`;
  }
  if (target.startsWith("#C") || target.startsWith("#D")) {
    return `<span class="chan-ref">#${esc(label || channelName(target.slice(1)))}</span>`;
  }
  if (target.startsWith("!date^")) {
    if (label) return esc(label);
    const secs = Number(target.split("^")[1]);
    return esc(new Date(secs * 1000).toLocaleString());
  }
  if (target === "!here" || target === "!channel" || target === "!everyone") {
    return `<span class="mention">@${esc(target.slice(1))}</span>`;
  }
  if (/^(https?|mailto):/.test(target)) {
    return `<a class="link" href="${esc(target)}" target="_blank" rel="noopener">${esc(label || target)}</a>`;
  }
  return esc(`<${inner}>`);
}
function splitOnce(s, sep) {
  const i = s.indexOf(sep);
  return i < 0 ? [s, null] : [s.slice(0, i), s.slice(i + 1)];
}
function textObj(t) {
  if (!t) return "";
  if (t.type === "mrkdwn") return mrkdwn(t.text);
  return esc(t.text).replace(/:([a-z0-9_+-]+):/g, (m, name) => (t.emoji !== false && emoji(name)) || m).replace(/\n/g, "<br>");
}

// ------------------------------------------------------------------ Block Kit

// `where` says where a click goes: {channel, message_ts} | {ephemeral_seq} | {view_id}
function renderBlocks(blocks, where, opts = {}) {
  const out = el("div", { class: "blocks" });
  for (const b of blocks || []) out.append(renderBlock(b, where, opts));
  return out;
}
function renderBlock(b, where, opts) {
  switch (b.type) {
    case "header":
      return el("div", { class: "block b-header", html: textObj(b.text) });
    case "section": {
      const node = el("div", { class: "block b-section" });
      const body = el("div", { class: "text" });
      if (b.text) body.append(el("div", { html: textObj(b.text) }));
      if (b.fields) {
        const grid = el("div", { class: "b-fields" });
        for (const f of b.fields) grid.append(el("div", { html: textObj(f) }));
        body.append(grid);
      }
      node.append(body);
      if (b.accessory) node.append(renderElement(b.accessory, b, where, opts));
      return node;
    }
    case "context": {
      const node = el("div", { class: "block b-context" });
      for (const e of b.elements || []) {
        if (e.type === "image") node.append(el("span", { class: "b-unknown" }, `[image: ${e.alt_text || ""}]`));
        else node.append(el("span", { html: textObj(e) }));
      }
      return node;
    }
    case "divider":
      return el("hr", { class: "b-divider" });
    case "actions": {
      const node = el("div", { class: "block b-actions" });
      for (const e of b.elements || []) node.append(renderElement(e, b, where, opts));
      return node;
    }
    case "input":
      return renderInput(b, opts);
    case "image":
      return el("div", { class: "block b-unknown" }, `[image: ${b.alt_text || ""}]`);
    case "rich_text":
      return el("div", { class: "block" }, richText(b));
    default:
      return el("div", { class: "block b-unknown" }, `[${b.type} block]`);
  }
}
function richText(b) {
  const parts = [];
  for (const sec of b.elements || []) for (const e of sec.elements || []) parts.push(e.text || "");
  return parts.join("");
}
function renderElement(e, block, where, opts) {
  if (e.type === "button") {
    const cls = "btn" + (e.style === "primary" ? " primary" : e.style === "danger" ? " danger" : "");
    const btn = el("button", { class: cls, type: "button", "data-action-id": e.action_id, html: textObj(e.text) });
    btn.addEventListener("click", () => clickButton(e, block, where, btn));
    return btn;
  }
  if (e.type === "static_select" && !opts.inModal) {
    const sel = el("select", {}, el("option", { value: "" }, e.placeholder ? e.placeholder.text : "Select"));
    for (const o of e.options || []) sel.append(el("option", { value: o.value }, o.text.text));
    return sel;
  }
  return el("span", { class: "b-unknown" }, `[${e.type}]`);
}

async function clickButton(e, block, where, btn) {
  if (e.confirm && !(await confirmDialog(e.confirm, e.style))) return;
  btn.disabled = true;
  const body = { user: S.user, action_id: e.action_id, value: e.value, block_id: block.block_id, ...where };
  const reply = await api("/sandbox/action", body);
  btn.disabled = false;
  logRequest(`block_actions ${e.action_id} as ${userName(S.user)}`, reply);
  if (reply.error) toast(reply.error);
  refreshSoon();
}

function confirmDialog(c, style) {
  return new Promise((resolve) => {
    const layer = $("#confirm-layer");
    const done = (answer) => { layer.hidden = true; layer.innerHTML = ""; resolve(answer); };
    const yesCls = "btn " + (c.style === "danger" || style === "danger" ? "danger solid" : "primary");
    layer.append(
      el("div", { class: "modal confirm", role: "dialog", "aria-modal": "true", "aria-label": c.title ? c.title.text : "Confirm" },
        el("div", { class: "modal-header" }, el("div", { class: "modal-title", html: textObj(c.title || { type: "plain_text", text: "Are you sure?" }) })),
        el("div", { class: "modal-body", html: textObj(c.text) }),
        el("div", { class: "modal-footer" },
          el("button", { class: "btn", type: "button", id: "confirm-deny", onclick: () => done(false) }, c.deny ? c.deny.text : "Cancel"),
          el("button", { class: yesCls, type: "button", id: "confirm-yes", onclick: () => done(true) }, c.confirm ? c.confirm.text : "Yes"))));
    layer.hidden = false;
    layer.querySelector("#confirm-yes").focus();
  });
}

// ------------------------------------------------------------------ modals

function renderInput(b, opts) {
  const e = b.element || {};
  const id = `in-${b.block_id}`;
  const err = (S.modalErrors || {})[b.block_id];
  const node = el("div", { class: "block b-input" + (err ? " has-error" : ""), "data-block-id": b.block_id, "data-type": e.type });
  node.append(el("label", { class: "label", for: id, html: textObj(b.label) + (b.optional ? ' <span class="optional">(optional)</span>' : "") }));
  if (e.type === "plain_text_input") {
    const attrs = { id, name: b.block_id, placeholder: e.placeholder ? e.placeholder.text : "" };
    const input = e.multiline ? el("textarea", attrs) : el("input", { type: "text", ...attrs });
    input.value = e.initial_value || "";
    node.append(input);
  } else if (e.type === "static_select") {
    const sel = el("select", { id, name: b.block_id }, el("option", { value: "" }, e.placeholder ? e.placeholder.text : "Select an option"));
    for (const o of e.options || []) sel.append(el("option", { value: o.value }, o.text.text));
    if (e.initial_option) sel.value = e.initial_option.value;
    node.append(sel);
  } else if (e.type === "radio_buttons") {
    const group = el("div", { id, role: "radiogroup" });
    for (const o of e.options || []) {
      const radio = el("input", { type: "radio", name: b.block_id, value: o.value });
      if (e.initial_option && e.initial_option.value === o.value) radio.checked = true;
      group.append(el("label", { class: "radio" }, radio, " ", el("span", { html: textObj(o.text) })));
    }
    node.append(group);
  } else {
    node.append(el("div", { class: "b-unknown" }, `[${e.type} input]`));
  }
  if (b.hint) node.append(el("div", { class: "hint", html: textObj(b.hint) }));
  if (err) node.append(el("div", { class: "error" }, err));
  return node;
}
function modalValues(root) {
  const values = {};
  for (const node of root.querySelectorAll(".b-input")) {
    const blockId = node.dataset.blockId;
    const type = node.dataset.type;
    if (type === "radio_buttons") {
      const checked = node.querySelector("input[type=radio]:checked");
      values[blockId] = checked ? checked.value : null;
    } else {
      const input = node.querySelector("input, textarea, select");
      values[blockId] = input ? input.value : null;
    }
  }
  return values;
}
function renderModal() {
  const layer = $("#modal-layer");
  const stack = (S.data && S.data.modals && S.data.modals[S.user]) || [];
  const view = stack[stack.length - 1];
  if (!view) {
    if (!layer.hidden) { layer.hidden = true; layer.innerHTML = ""; }
    S.modalKey = null;
    return;
  }
  const key = `${S.user}:${view.id}:${view.hash}:${JSON.stringify(S.modalErrors)}`;
  if (key === S.modalKey) return; // unchanged: keep what the user typed
  S.modalKey = key;
  const kept = layer.querySelector(".modal") && layer.dataset.viewId === view.id ? modalValues(layer) : null;
  layer.innerHTML = "";
  layer.dataset.viewId = view.id;
  const where = { view_id: view.id };
  const body = el("div", { class: "modal-body" }, renderBlocks(view.blocks, where, { inModal: true }));
  const close = async () => {
    const reply = await api("/sandbox/view_close", { user: S.user, view_id: view.id });
    if (reply.sent) logRequest(`view_closed ${view.callback_id}`, reply);
    S.modalErrors = {};
    refreshSoon();
  };
  const submit = async (ev) => {
    ev.preventDefault();
    const values = modalValues(layer);
    const btn = layer.querySelector("#modal-submit");
    if (btn) btn.disabled = true;
    const reply = await api("/sandbox/view_submit", { user: S.user, view_id: view.id, values });
    if (btn) btn.disabled = false;
    logRequest(`view_submission ${view.callback_id} as ${userName(S.user)}`, reply);
    if (reply.error) { toast(reply.error); return; }
    const j = reply.json || {};
    S.modalErrors = j.response_action === "errors" ? (j.errors || {}) : {};
    S.modalKey = null;
    refreshSoon();
  };
  const form = el("form", { class: "modal", role: "dialog", "aria-modal": "true", "aria-label": view.title ? view.title.text : "Modal", onsubmit: submit },
    el("div", { class: "modal-header" },
      el("div", { class: "modal-title", html: textObj(view.title) }),
      el("button", { class: "icon", type: "button", title: "Close", "aria-label": "Close", onclick: close }, "×")),
    body,
    el("div", { class: "modal-footer" },
      el("button", { class: "btn", type: "button", id: "modal-close", onclick: close }, view.close ? view.close.text : "Cancel"),
      view.submit ? el("button", { class: "btn primary", type: "submit", id: "modal-submit" }, view.submit.text) : null));
  layer.append(form);
  if (kept) {
    for (const [blockId, value] of Object.entries(kept)) {
      const node = layer.querySelector(`.b-input[data-block-id="${CSS.escape(blockId)}"]`);
      if (!node || value === null) continue;
      if (node.dataset.type === "radio_buttons") {
        const r = node.querySelector(`input[value="${CSS.escape(value)}"]`);
        if (r) r.checked = true;
      } else {
        const input = node.querySelector("input, textarea, select");
        if (input) input.value = value;
      }
    }
  }
  layer.hidden = false;
}

// ------------------------------------------------------------------ messages

function renderMessage(m, channel, opts = {}) {
  const isBot = !!m.bot_id || m.user === (S.config && S.config.bot.user_id);
  const name = isBot ? "rotabot" : userName(m.user);
  const node = el("div", { class: "msg" + (opts.ephemeral ? " ephemeral" : ""), "data-ts": m.ts, "data-channel": channel });
  node.append(el("div", { class: "avatar", style: `background:${isBot ? "#e8912d" : colorFor(m.user || "x")}` }, isBot ? "R" : name[0]));
  const body = el("div", { class: "msg-body" });
  if (opts.ephemeral) body.append(el("div", { class: "only-you" }, "Only visible to you"));
  body.append(el("div", { class: "msg-meta" },
    el("span", { class: "name" }, name), isBot ? el("span", { class: "badge" }, "APP") : null,
    el("span", { class: "time" }, timeOf(m.ts)),
    m.edited ? el("span", { class: "edited" }, "(edited)") : null));
  const where = opts.ephemeral ? { ephemeral_seq: opts.seq } : { channel, message_ts: m.ts };
  if (m.blocks && m.blocks.length) body.append(renderBlocks(m.blocks, where));
  else body.append(el("div", { class: "block", html: mrkdwn(m.text) }));
  if (!opts.inThread && m.reply_count) {
    const link = el("button", { class: "thread-link", type: "button" }, `${m.reply_count} ${m.reply_count === 1 ? "reply" : "replies"}`);
    link.addEventListener("click", () => openThread(channel, m.ts));
    body.append(link);
  }
  node.append(body);
  return node;
}

function currentChannel() {
  if (!S.data || S.nav.kind !== "channel") return null;
  return S.data.channels.find((c) => c.id === S.nav.id) || null;
}

function renderMain() {
  const header = $("#channel-header");
  const box = $("#messages");
  const composer = $("#composer");
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  box.innerHTML = "";
  if (S.nav.kind === "home") {
    header.innerHTML = "";
    header.append(el("span", {}, "rotabot"), el("span", { class: "muted" }, "App Home"));
    composer.hidden = true;
    const home = S.data && S.data.home && S.data.home[S.user];
    box.append(el("div", { class: "home-tabs" }, el("span", {}, "Home")));
    if (!home) box.append(el("div", { class: "empty" }, "Opening App Home… (the bot publishes it on app_home_opened)"));
    else box.append(el("div", { class: "home" }, renderBlocks(home.blocks, { view_id: home.id })));
    return;
  }
  composer.hidden = false;
  const ch = currentChannel();
  header.innerHTML = "";
  if (!ch) { header.textContent = "…"; return; }
  const title = ch.is_im ? "rotabot" : `# ${ch.name}`;
  header.append(el("span", {}, title), el("span", { class: "muted" }, ch.is_im ? "direct messages with the app" : `${ch.members.length} members`));
  $("#composer-input").placeholder = ch.is_im ? "Message rotabot" : `Message #${ch.name} — try /rotate help`;
  const items = [];
  for (const m of ch.messages) {
    if (m.thread_ts && m.thread_ts !== m.ts) continue; // replies live in the thread pane
    items.push({ ts: m.ts, node: () => renderMessage(m, ch.id) });
  }
  for (const e of S.data.ephemerals) {
    if (e.channel !== ch.id || e.thread_ts) continue;
    items.push({ ts: e.ts, node: () => renderMessage({ ...e, bot_id: "B" }, ch.id, { ephemeral: true, seq: e.seq }) });
  }
  items.sort((a, b) => parseFloat(a.ts) - parseFloat(b.ts));
  if (!items.length) box.append(el("div", { class: "empty" }, ch.is_im ? "No messages yet." : "No messages yet. Type /rotate help below."));
  for (const it of items) box.append(it.node());
  if (atBottom || S.scrollToEnd) { box.scrollTop = box.scrollHeight; S.scrollToEnd = false; }
}

function openThread(channel, ts) {
  S.thread = { channel, ts };
  $("#thread-pane").hidden = false;
  S.threadScroll = true;
  renderThread();
}
function renderThread() {
  const pane = $("#thread-pane");
  if (!S.thread || !S.data) { pane.hidden = true; return; }
  const ch = S.data.channels.find((c) => c.id === S.thread.channel);
  const parent = ch && ch.messages.find((m) => m.ts === S.thread.ts);
  if (!parent) { pane.hidden = true; S.thread = null; return; }
  pane.hidden = false;
  $("#thread-where").textContent = ch.is_im ? "" : `#${ch.name}`;
  const box = $("#thread-messages");
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  box.innerHTML = "";
  box.append(renderMessage(parent, ch.id, { inThread: true }));
  const replies = ch.messages.filter((m) => m.thread_ts === parent.ts && m.ts !== parent.ts);
  box.append(el("div", { class: "reply-count" }, `${replies.length} ${replies.length === 1 ? "reply" : "replies"}`));
  const items = replies.map((m) => ({ ts: m.ts, node: () => renderMessage(m, ch.id, { inThread: true }) }));
  for (const e of S.data.ephemerals) {
    if (e.channel === ch.id && e.thread_ts === parent.ts) {
      items.push({ ts: e.ts, node: () => renderMessage({ ...e, bot_id: "B" }, ch.id, { ephemeral: true, seq: e.seq, inThread: true }) });
    }
  }
  items.sort((a, b) => parseFloat(a.ts) - parseFloat(b.ts));
  for (const it of items) box.append(it.node());
  if (atBottom || S.threadScroll) { box.scrollTop = box.scrollHeight; S.threadScroll = false; }
}

function renderSidebar() {
  const me = S.config.people.find((p) => p.id === S.user);
  $("#me").innerHTML = "";
  $("#me").append(el("span", { class: "dot" }), me ? `${me.real_name} · ${me.role}` : S.user);
  const list = $("#channel-list");
  list.innerHTML = "";
  const dms = $("#dm-list");
  dms.innerHTML = "";
  for (const ch of S.data.channels) {
    const active = S.nav.kind === "channel" && S.nav.id === ch.id;
    const latest = ch.messages.length ? ch.messages[ch.messages.length - 1].ts : "0";
    if (active) S.lastSeen[ch.id] = latest;
    const unread = !active && parseFloat(latest) > parseFloat(S.lastSeen[ch.id] || "0");
    const a = el("a", { href: "#", class: (active ? "active" : "") + (unread ? " unread" : ""), "data-channel": ch.id },
      ch.is_im ? "rotabot" : `# ${ch.name}`);
    a.addEventListener("click", (ev) => { ev.preventDefault(); go({ kind: "channel", id: ch.id }); });
    (ch.is_im ? dms : list).append(el("li", {}, a));
  }
  $("#nav-home").classList.toggle("active", S.nav.kind === "home");
}

function renderTools() {
  const rot = $("#rotations");
  rot.innerHTML = "";
  const rotations = S.data.rotations || [];
  if (!rotations.length) rot.append(el("div", { class: "small" }, "No active rotation. As Ada Admin, type /rotate start model-api-key in #rotations."));
  for (const r of rotations) rot.append(el("div", {}, el("b", {}, r.ref), ` ${r.secret} · `, el("i", {}, r.phase)));
  const stores = $("#stores");
  stores.innerHTML = "";
  for (const sec of S.config.secrets) {
    const st = (S.data.stores || {})[sec.name] || {};
    const node = el("div", { class: "store", "data-secret": sec.name },
      el("div", {}, el("b", {}, sec.name), el("span", { class: "small" }, ` · issuer ${sec.issuer}`)),
      el("div", { class: "path" }, st.path || sec.store_path));
    for (const v of st.versions || []) {
      node.append(el("div", { class: "version" + (v.destroyed ? " destroyed" : "") }, `v${v.version} `,
        v.labels.map((l) => el("span", { class: `chip ${l}` }, l)), v.destroyed ? el("span", { class: "small" }, " value deleted") : null));
    }
    const lanes = renderLanes(st.lanes || []);
    if (lanes) node.append(lanes);
    if (sec.issuer === "manual") {
      const btn = el("button", { class: "btn", type: "button", "data-write": sec.name }, "Write a new version");
      btn.addEventListener("click", async () => {
        btn.disabled = true;
        const reply = await api("/sandbox/store/write", { secret: sec.name });
        btn.disabled = false;
        if (reply.error) toast(reply.error); else toast(`Wrote v${reply.version} of ${sec.name} (the value is never shown)`);
        refreshSoon();
      });
      node.append(btn);
    }
    stores.append(node);
  }
}

// What a lane target holds, compared with the store (the JSON names it, never a value):
// the badge's color says which credential consumers of that lane read right now.
const HOLDS = { "current": "current", "new (pending)": "new", "previous": "previous", "other": "other", "empty": "empty" };
function holdsBadge(t) {
  const kind = HOLDS[t.holds] || "other";
  const text = t.holds === "unreadable" ? `unreadable (${t.error || "error"})`
    : t.version ? `${t.holds} · v${t.version}` : t.holds;
  return el("span", { class: `holds ${kind}`, "data-holds": t.holds }, text);
}
function renderLanes(lanes) {
  if (!lanes.length) return null;
  const box = el("div", { class: "lanes" }, el("div", { class: "small" }, "Lane targets: what each lane's consumers read"));
  for (const ln of lanes) {
    if (ln.error) { box.append(el("div", { class: "small bad" }, `targets unusable (${ln.error})`)); continue; }
    const row = el("div", { class: "lane", "data-lane": ln.lane }, el("span", { class: "lane-name" }, ln.lane));
    const targets = el("div", { class: "lane-targets" });
    for (const t of ln.targets) {
      targets.append(el("div", { class: "target", "data-target": t.label }, holdsBadge(t), " ", el("span", { class: "path" }, t.label)));
    }
    row.append(targets);
    box.append(row);
  }
  return box;
}

function render() {
  if (!S.data || !S.config) return;
  renderSidebar();
  renderMain();
  renderThread();
  renderModal();
  renderTools();
}

// ------------------------------------------------------------------ navigation and polling

async function go(nav) {
  S.nav = nav;
  S.scrollToEnd = true;
  if (nav.kind === "home") {
    render();
    const reply = await api("/sandbox/home", { user: S.user });
    logRequest(`event app_home_opened for ${userName(S.user)}`, reply);
  }
  render();
}

async function pollLoop() {
  const mine = {};
  S.poll = mine;
  let since = -1;
  while (S.poll === mine) {
    try {
      const res = await fetch(`/sandbox/state?user=${encodeURIComponent(S.user)}&since=${since}`);
      if (S.poll !== mine) return;
      if (res.status === 200) {
        S.data = await res.json();
        since = S.data.seq;
        render();
      }
    } catch (e) {
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}
function refreshSoon() {
  // The long-poll returns on the next change; this covers changes it cannot see (store files).
  setTimeout(async () => {
    const res = await fetch(`/sandbox/state?user=${encodeURIComponent(S.user)}`);
    if (res.ok) { S.data = await res.json(); render(); }
  }, 400);
}

function switchUser(id) {
  S.user = id;
  localStorage.setItem("rotabot-sandbox-user", id);
  S.modalKey = null;
  S.modalErrors = {};
  pollLoop();
  if (S.nav.kind === "home") go(S.nav);
}

async function sendComposer(input, threadTs) {
  const text = input.value.trim();
  if (!text) return;
  const channel = threadTs ? S.thread.channel : S.nav.id;
  input.value = "";
  const reply = await api("/sandbox/command", { user: S.user, channel, text, thread_ts: threadTs || null });
  if (text.startsWith("/")) logRequest(`slash command ${text} as ${userName(S.user)}`, reply);
  if (reply.error) toast(reply.error);
  else if (reply.sent && !reply.ok) toast(`The bot answered HTTP ${reply.status}`);
  S.scrollToEnd = true;
  refreshSoon();
}

function setupAlertPanel() {
  const secretSel = $("#alert-secret");
  const consumerSel = $("#alert-consumer");
  for (const s of S.config.secrets) secretSel.append(el("option", { value: s.name }, s.name));
  const fill = () => {
    consumerSel.innerHTML = "";
    const sec = S.config.secrets.find((s) => s.name === secretSel.value);
    for (const c of (sec ? sec.consumers : [])) consumerSel.append(el("option", { value: c.name, "data-lane": c.lane }, `${c.name} (${c.lane})`));
  };
  secretSel.addEventListener("change", fill);
  fill();
  $("#alert-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const opt = consumerSel.selectedOptions[0];
    const reply = await api("/sandbox/alert", {
      secret: secretSel.value,
      consumer: consumerSel.value,
      lane: opt ? opt.dataset.lane : "",
      status_code: $("#alert-status").value.trim(),
      error: $("#alert-error").value.trim(),
      message: $("#alert-message").value.trim(),
    });
    const res = $("#alert-result");
    res.innerHTML = "";
    if (reply.error) res.append(el("span", { class: "bad" }, reply.error));
    else res.append(el("span", { class: reply.ok ? "good" : "bad" }, `POST /alerts → ${reply.status}`), " ", (reply.body || "").slice(0, 300));
    logRequest(`alert for ${consumerSel.value} (POST /alerts, signed)`, reply);
    refreshSoon();
  });
}

function setupEvidencePanel() {
  const secretSel = $("#evidence-secret");
  const consumerSel = $("#evidence-consumer");
  for (const s of S.config.secrets) secretSel.append(el("option", { value: s.name }, s.name));
  const fill = () => {
    consumerSel.innerHTML = "";
    const sec = S.config.secrets.find((s) => s.name === secretSel.value);
    for (const c of (sec ? sec.consumers : [])) consumerSel.append(el("option", { value: c.name }, `${c.name} (${c.lane})`));
  };
  secretSel.addEventListener("change", fill);
  fill();
  $("#evidence-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const reply = await api("/sandbox/evidence", {
      secret: secretSel.value,
      consumer: consumerSel.value,
      version: $("#evidence-version").value.trim(),
      workflow: $("#evidence-workflow").value.trim(),
      ok: $("#evidence-ok").checked,
    });
    const res = $("#evidence-result");
    res.innerHTML = "";
    if (reply.error) res.append(el("span", { class: "bad" }, reply.error));
    else res.append(el("span", { class: reply.ok ? "good" : "bad" }, `POST /evidence → ${reply.status}`), " ", (reply.body || "").slice(0, 300));
    logRequest(`report from ${consumerSel.value} (POST /evidence, signed)`, reply);
    refreshSoon();
  });
}

async function main() {
  S.config = await (await fetch("/sandbox/config")).json();
  $("#team-name").textContent = S.config.team;
  const sw = $("#user-switcher");
  for (const p of S.config.people) sw.append(el("option", { value: p.id }, `${p.real_name} — ${p.role}`));
  if (!S.config.people.some((p) => p.id === S.user)) S.user = S.config.people[0].id;
  sw.value = S.user;
  sw.addEventListener("change", () => switchUser(sw.value));
  const notes = $("#notes");
  for (const n of S.config.notes) notes.append(el("div", { class: "note" }, n));
  $("#nav-home").addEventListener("click", (ev) => { ev.preventDefault(); go({ kind: "home" }); });
  $("#thread-close").addEventListener("click", () => { S.thread = null; renderThread(); });
  const composer = $("#composer-input");
  $("#composer").addEventListener("submit", (ev) => { ev.preventDefault(); sendComposer(composer); });
  composer.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); sendComposer(composer); }
  });
  const threadInput = $("#thread-input");
  $("#thread-composer").addEventListener("submit", (ev) => { ev.preventDefault(); sendComposer(threadInput, S.thread && S.thread.ts); });
  threadInput.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); sendComposer(threadInput, S.thread && S.thread.ts); }
  });
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && !$("#confirm-layer").hidden) $("#confirm-deny").click();
  });
  setupAlertPanel();
  setupEvidencePanel();
  pollLoop();
}

main();
