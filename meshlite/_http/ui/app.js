// meshlite web UI: members, services and a KV editor over the Consul-compatible HTTP API.
//
// Theory of operation
// -------------------
// One page, three views chosen by the URL fragment (#/members, #/services, #/kv/<path>).
// Each view runs while it is shown: it holds Consul blocking queries (?index=&wait=, see
// https://developer.hashicorp.com/consul/api-docs/features/blocking) and re-renders when
// X-Consul-Index moves; leaving the view aborts them.  Failures back off exponentially
// with jitter.  Every API call carries the ACL token from sessionStorage; a 403 opens the
// token dialog and the call is retried with what the user enters.  KV writes are
// check-and-set on the ModifyIndex that was loaded, so a concurrent change is reported,
// never overwritten.  All data reaches the page as text nodes (no innerHTML), and the
// agent serves this file under a same-origin-only Content-Security-Policy.

const WAIT = "60s"; // blocking-query wait; the server adds up to wait/16 of jitter
const REQUEST_TIMEOUT_MS = 90_000; // a held query answers within WAIT + jitter
const MIN_GAP_MS = 100; // at most ten blocking round-trips a second per view
const NO_INDEX_POLL_MS = 5_000; // an endpoint without X-Consul-Index is polled instead
const MEMBERS_WAIT = "10s"; // members and leader have no index of their own: refresh often
const BACKOFF_MIN_MS = 1_000;
const BACKOFF_MAX_MS = 30_000;
const FETCH_CONCURRENCY = 4; // browsers allow 6 connections per host; keep 2 for watches
const TOKEN_KEY = "meshlite.token";
const MEMBER_STATUS = { 0: "none", 1: "alive", 2: "leaving", 3: "left", 4: "failed" };
const CHECK_ORDER = { passing: 0, warning: 1, critical: 2 };
const CAS_CONFLICT =
  "This key was changed by someone else since you loaded it; reload to see the current " +
  "value, then make your change again.";

const API_BASE = location.pathname.replace(/\/ui(\/.*)?$/, ""); // "" unless behind a prefix

// ----------------------------------------------------------------------------- DOM

/** Build an element: h("a", {href: "#", class: "x", onclick: f}, "text", child, ...). */
function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const $ = (id) => document.getElementById(id);
const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

function badge(text, kind) {
  return h("span", { class: `badge badge-${kind}` }, text);
}

function statusBadge(status) {
  return h("span", { class: `status status-${status}`, dataset: { status } }, status);
}

// ----------------------------------------------------------------------------- token

function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

const tokenEvents = new EventTarget();

function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
  tokenEvents.dispatchEvent(new Event("change"));
  updateTokenButton();
}

function updateTokenButton() {
  $("token-button").textContent = getToken() ? "ACL token ✓" : "ACL token";
}

/** One token dialog at a time; every caller waiting on it gets the same answer. */
const tokenDialog = {
  pending: null,
  resolve: null,
  ask(reason) {
    if (this.pending) return this.pending;
    this.pending = new Promise((resolve) => (this.resolve = resolve));
    $("token-reason").textContent = reason;
    $("token-error").textContent = "";
    $("token-input").value = "";
    $("token-forget").hidden = !getToken();
    $("token-dialog").showModal();
    $("token-input").focus();
    return this.pending;
  },
  close(result) {
    const resolve = this.resolve;
    this.pending = this.resolve = null;
    if ($("token-dialog").open) $("token-dialog").close();
    if (resolve) resolve(result);
  },
};

function setUpTokenDialog() {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token-input").value.trim();
    if (!token) {
      $("token-error").textContent = "Enter a token, or Cancel.";
      return;
    }
    setToken(token);
    tokenDialog.close(true);
  });
  $("token-cancel").addEventListener("click", () => tokenDialog.close(false));
  $("token-dialog").addEventListener("cancel", (event) => {
    event.preventDefault(); // Escape: close through our path, so waiters are answered
    tokenDialog.close(false);
  });
  $("token-forget").addEventListener("click", () => {
    setToken("");
    tokenDialog.close(false);
    restartView();
  });
  $("token-button").addEventListener("click", async () => {
    if (await tokenDialog.ask("Set the ACL token this tab sends with every API call.")) {
      restartView();
    }
  });
  updateTokenButton();
}

// ----------------------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, text) {
    super(status ? `${status}: ${text || "error"}` : text);
    this.status = status;
  }
}

function timeoutSignal(signal) {
  if (!AbortSignal.any || !AbortSignal.timeout) return signal;
  return AbortSignal.any([signal, AbortSignal.timeout(REQUEST_TIMEOUT_MS)]);
}

/**
 * Call the API.  Returns {status, index, data}; data is the parsed JSON (null on 404).
 * A 403 asks for a token and tries again; other failures throw ApiError.
 */
async function request(path, { method = "GET", body, signal } = {}) {
  for (;;) {
    const token = getToken();
    const headers = token ? { "X-Consul-Token": token } : {};
    let res;
    try {
      res = await fetch(API_BASE + path, {
        method, body, headers, cache: "no-store", signal: timeoutSignal(signal),
      });
    } catch (err) {
      if (signal && signal.aborted) throw err;
      throw new ApiError(0, `cannot reach the agent (${err.message})`);
    }
    if (res.status === 403) {
      const text = (await res.text()).trim();
      const reason = token
        ? `The agent refused the token (${text}). Enter another one.`
        : `This agent requires an ACL token (${text}).`;
      if (await tokenDialog.ask(reason)) continue;
      throw new ApiError(403, text);
    }
    const index = Number(res.headers.get("X-Consul-Index") || 0);
    const text = await res.text();
    if (res.status === 404) return { status: 404, index, data: null };
    if (!res.ok) throw new ApiError(res.status, text.trim());
    return { status: res.status, index, data: text ? JSON.parse(text) : null };
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}

function untilTokenChanges(signal) {
  return new Promise((resolve) => {
    const done = () => {
      tokenEvents.removeEventListener("change", done);
      signal.removeEventListener("abort", done);
      resolve();
    };
    tokenEvents.addEventListener("change", done);
    signal.addEventListener("abort", done);
  });
}

function backoffMs(failures) {
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (failures - 1));
  return ceiling / 2 + Math.random() * (ceiling / 2); // "equal jitter"
}

/** The header's connection indicator. */
const live = {
  set(state, text) {
    const el = $("live");
    el.className = `live live-${state}`;
    if (el.textContent !== text) el.textContent = text;
  },
};

/**
 * Hold a blocking query on `path` until `signal` aborts; call `onChange(res)` whenever
 * X-Consul-Index moves (or on every answer with `always`).  Errors go to `onError(err,
 * retryMs)` and back off; a 403 the user did not answer waits for a new token.
 */
async function watch(signal, path, onChange, { onError, wait = WAIT, always = false } = {}) {
  let index = 0;
  let failures = 0;
  while (!signal.aborted) {
    const started = performance.now();
    const sep = path.includes("?") ? "&" : "?";
    const url = index > 0 ? `${path}${sep}index=${index}&wait=${wait}` : path;
    try {
      const res = await request(url, { signal });
      if (signal.aborted) return;
      if (always || res.index !== index || res.index === 0) await onChange(res);
      // Consul's rule: an index that goes backwards (a restarted agent) is taken as new.
      index = res.index > 0 ? res.index : 0;
      failures = 0;
      live.set("ok", "● Live");
      if (!index) await sleep(NO_INDEX_POLL_MS, signal);
    } catch (err) {
      if (signal.aborted) return;
      if (err instanceof ApiError && err.status === 403) {
        live.set("denied", "ACL token needed");
        if (onError) onError(err, 0);
        await untilTokenChanges(signal);
        continue;
      }
      failures += 1;
      const retryMs = backoffMs(failures);
      live.set("error", `Reconnecting in ${Math.ceil(retryMs / 1000)} s`);
      if (onError) onError(err, retryMs);
      await sleep(retryMs, signal);
    }
    await sleep(Math.max(0, MIN_GAP_MS - (performance.now() - started)), signal);
  }
}

/** Run `fn` now; calls made while it runs collapse into one more run after it. */
function coalesced(fn) {
  let running = null;
  let again = false;
  return async function run() {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      try {
        do {
          again = false;
          await fn();
        } while (again);
      } finally {
        running = null;
      }
    })();
    return running;
  };
}

/** A renderer that skips data identical to what it drew last (keeps focus and scroll). */
function unlessSame(render) {
  let last = null;
  return (...args) => {
    const key = JSON.stringify(args.filter((a) => !(a instanceof Node)));
    if (key === last) return;
    last = key;
    render(...args);
  };
}

async function mapLimit(items, limit, fn) {
  const out = new Array(items.length);
  let next = 0;
  async function worker() {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/** A view's error line: "Could not load ...; retrying in 4 s", with a token button on 403. */
function problemBox() {
  const box = h("div", { class: "problem", role: "alert" });
  return {
    box,
    show(err, retryMs) {
      if (err.status === 403) {
        const ask = async () => {
          if (await tokenDialog.ask("This view needs an ACL token with read access.")) {
            restartView();
          }
        };
        box.replaceChildren(
          h("p", {}, "Permission denied: this agent requires an ACL token to read this. "),
          h("button", { type: "button", class: "primary", onclick: ask }, "Enter token"),
        );
      } else {
        const retry = retryMs ? `; retrying in ${Math.ceil(retryMs / 1000)} s` : "";
        box.replaceChildren(h("p", {}, `Could not load: ${err.message}${retry}.`));
      }
    },
    clear() {
      box.replaceChildren();
    },
  };
}

function viewHeading(title, ...extra) {
  document.title = `${title} · meshlite`;
  return h("div", { class: "view-head" }, h("h1", { id: "view-title", tabindex: "-1" }, title), extra);
}

// ----------------------------------------------------------------------------- members

function isServer(member) {
  const role = (member.Tags || {}).role;
  return role === "server" || role === "consul";
}

function splitHostPort(text) {
  const m = /^\[(.*)\]:(\d+)$/.exec(text) || /^([^:]*):(\d+)$/.exec(text);
  return m ? [m[1], Number(m[2])] : [text, 0];
}

/** /v1/status/leader's "host:port" as a member: its gossip address, else its server port. */
function leaderName(members, leader) {
  if (!leader) return null;
  const [host, port] = splitHostPort(leader);
  const servers = members.filter(isServer);
  const onHost = servers.filter((m) => m.Addr === host);
  const found =
    members.find((m) => m.Addr === host && m.Port === port) ||
    onHost.find((m) => Number((m.Tags || {}).port) === port) ||
    (onHost.length === 1 ? onHost[0] : null);
  return found ? found.Name : null;
}

function membersView(main, signal) {
  const problem = problemBox();
  const summary = h("p", { class: "summary" });
  const body = h("div", { class: "table-wrap" });
  main.append(viewHeading("Members"), problem.box, summary, body);
  const render = unlessSame(renderMembers);

  async function refresh() {
    const [members, leader] = await Promise.all([
      request("/v1/agent/members", { signal }),
      request("/v1/status/leader", { signal }),
    ]);
    if (signal.aborted) return;
    problem.clear();
    render(summary, body, members.data || [], leader.data || "");
  }
  // Members have no index of their own: a change to the catalog's nodes wakes us, and a
  // short wait refreshes anyway (status and leadership move without a catalog change).
  watch(signal, "/v1/catalog/nodes", refresh, {
    wait: MEMBERS_WAIT, always: true, onError: problem.show,
  });
}

function renderMembers(summary, body, members, leader) {
  const leading = leaderName(members, leader);
  const sorted = [...members].sort((a, b) => a.Name.localeCompare(b.Name));
  const counts = {};
  for (const m of sorted) {
    const status = MEMBER_STATUS[m.Status] || "unknown";
    counts[status] = (counts[status] || 0) + 1;
  }
  const parts = Object.entries(counts).map(([status, n]) => `${n} ${status}`);
  summary.textContent = `${plural(sorted.length, "member")}: ${parts.join(", ") || "none"}` +
    (leader ? `. Leader: ${leading || leader}.` : ". No leader.");
  const rows = sorted.map((m) => memberRow(m, m.Name === leading));
  body.replaceChildren(
    h("table", { class: "grid", id: "members-table" },
      h("caption", { class: "sr-only" }, "Members of the mesh"),
      h("thead", {}, h("tr", {},
        ["Name", "Address", "Status", "Role", "Meta"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows)),
  );
}

function memberRow(m, isLeader) {
  const status = MEMBER_STATUS[m.Status] || "unknown";
  const tags = Object.entries(m.Tags || {}).filter(([k]) => k !== "role");
  return h("tr", { dataset: { member: m.Name } },
    h("th", { scope: "row" }, m.Name),
    h("td", { class: "mono" }, m.Addr.includes(":") ? `[${m.Addr}]:${m.Port}` : `${m.Addr}:${m.Port}`),
    h("td", {}, h("span", { class: `status status-member-${status}`, dataset: { status } }, status)),
    h("td", {}, h("span", { class: "badges" },
      isServer(m) ? badge("server", "server") : badge("client", "client"),
      isLeader ? badge("leader", "leader") : null)),
    h("td", {}, tags.length
      ? h("ul", { class: "chips" }, tags.map(([k, v]) => h("li", { class: "chip" }, `${k}=${v}`)))
      : h("span", { class: "muted" }, "—")),
  );
}

// ----------------------------------------------------------------------------- services

function worst(statuses) {
  let out = "passing";
  for (const s of statuses) if ((CHECK_ORDER[s] ?? 2) > (CHECK_ORDER[out] ?? 2)) out = s;
  return out;
}

function servicesView(main, signal) {
  const problem = problemBox();
  const summary = h("p", { class: "summary" });
  const list = h("div", { class: "services" });
  main.append(viewHeading("Services"), problem.box, summary, list);
  const render = unlessSame(renderServices);

  const refresh = coalesced(async () => {
    const catalog = (await request("/v1/catalog/services", { signal })).data || {};
    const names = Object.keys(catalog).sort();
    const entries = await mapLimit(names, FETCH_CONCURRENCY, async (name) =>
      (await request(`/v1/health/service/${encodeURIComponent(name)}`, { signal })).data || []);
    if (signal.aborted) return;
    problem.clear();
    render(summary, list, names.map((name, i) => ({ name, tags: catalog[name], entries: entries[i] })));
  });
  // Consul keeps separate indexes for services and checks: watch both.
  watch(signal, "/v1/catalog/services", refresh, { onError: problem.show });
  watch(signal, "/v1/health/state/any", refresh, { onError: problem.show });
}

function renderServices(summary, list, services) {
  const instances = services.reduce((n, s) => n + s.entries.length, 0);
  const unhealthy = services.filter((s) =>
    s.entries.some((e) => worst(e.Checks.map((c) => c.Status)) !== "passing")).length;
  summary.textContent = `${plural(services.length, "service")}, ${plural(instances, "instance")}` +
    (unhealthy ? `; ${unhealthy} not passing.` : ".");
  if (!services.length) {
    list.replaceChildren(h("p", { class: "empty" },
      "No services registered. Register one with PUT /v1/agent/service/register, " +
      "a service definition in the agent's config, or mesh.register() in Python."));
    return;
  }
  list.replaceChildren(...services.map(serviceCard));
}

function serviceCard(service, i) {
  const all = service.entries.flatMap((e) => e.Checks.map((c) => c.Status));
  const titleId = `service-${i}`;
  return h("section", { class: "card", "aria-labelledby": titleId, dataset: { service: service.name } },
    h("div", { class: "card-head" },
      h("h2", { id: titleId }, service.name),
      statusBadge(service.entries.length ? worst(all) : "critical"),
      h("span", { class: "muted" }, plural(service.entries.length, "instance")),
      (service.tags || []).length
        ? h("ul", { class: "chips", "aria-label": "Tags" }, service.tags.map((t) => h("li", { class: "chip" }, t)))
        : null),
    h("div", { class: "table-wrap" },
      h("table", { class: "grid" },
        h("caption", { class: "sr-only" }, `Instances of ${service.name}`),
        h("thead", {}, h("tr", {},
          ["Instance", "Node", "Address", "Checks"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, service.entries.map(instanceRow)))),
  );
}

function instanceRow(entry) {
  const svc = entry.Service;
  const address = svc.Address || entry.Node.Address;
  const where = address.includes(":") ? `[${address}]:${svc.Port}` : `${address}:${svc.Port}`;
  return h("tr", { dataset: { instance: svc.ID } },
    h("th", { scope: "row" }, svc.ID),
    h("td", {}, entry.Node.Node),
    h("td", { class: "mono" }, where),
    h("td", {}, h("ul", { class: "checks" }, entry.Checks.map((c) =>
      h("li", { dataset: { check: c.CheckID } },
        statusBadge(c.Status), " ",
        h("span", { class: "check-name" }, c.Name || c.CheckID),
        c.Output ? h("pre", { class: "output" }, c.Output) : null)))),
  );
}

// ----------------------------------------------------------------------------- KV

const encodeKey = (key) => key.split("/").map(encodeURIComponent).join("/");
const kvPath = (key) => `/v1/kv/${encodeKey(key)}`;
const kvHash = (key) => `#/kv/${encodeKey(key)}`;
const parentOf = (key) => key.replace(/[^/]*\/?$/, "");
const baseName = (key) => key.slice(parentOf(key).length);

function decodeValue(b64) {
  if (b64 === null || b64 === undefined) return { text: "", size: 0 };
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  try {
    return { text: new TextDecoder("utf-8", { fatal: true }).decode(bytes), size: bytes.length };
  } catch {
    return { text: null, base64: b64, size: bytes.length };
  }
}

function breadcrumbs(path) {
  const crumb = (text, key) =>
    h("li", {}, h("a", { href: kvHash(key), "aria-current": key === path ? "page" : null }, text));
  const items = [crumb("(root)", "")];
  const segments = path.split("/"); // "a/b/" -> ["a", "b", ""]; "a/b" -> ["a", "b"]
  let key = "";
  segments.forEach((segment, i) => {
    const last = i === segments.length - 1;
    if (last && segment === "") return; // a folder's trailing slash
    key += last ? segment : `${segment}/`;
    items.push(crumb(last ? segment : `${segment}/`, key));
  });
  return h("nav", { class: "crumbs", "aria-label": "Key path" }, h("ol", {}, items));
}

function kvView(main, signal, path) {
  if (path === "" || path.endsWith("/")) kvFolder(main, signal, path);
  else kvKey(main, signal, path);
}

function kvFolder(main, signal, prefix) {
  const problem = problemBox();
  const list = h("div", { class: "kv-list" });
  const actions = h("div", { class: "row-actions" });
  main.append(viewHeading(prefix ? `Key/Value: ${prefix}` : "Key/Value"), breadcrumbs(prefix),
    problem.box, list, createForm(signal, prefix), actions);
  if (prefix) actions.append(deleteFolderControl(signal, prefix));
  const render = unlessSame(renderKeys);
  watch(signal, `${kvPath(prefix)}?keys&separator=/`, (res) => {
    problem.clear();
    render(list, prefix, (res.data || []).filter((k) => k !== prefix));
  }, { onError: problem.show });
}

function renderKeys(list, prefix, keys) {
  if (!keys.length) {
    list.replaceChildren(h("p", { class: "empty" }, prefix ? "This folder is empty." : "No keys yet."));
    return;
  }
  const sorted = [...keys].sort((a, b) =>
    (b.endsWith("/") - a.endsWith("/")) || a.localeCompare(b));
  list.replaceChildren(h("ul", { class: "keys", id: "kv-keys", "aria-label": "Keys" },
    sorted.map((key) => h("li", { class: key.endsWith("/") ? "folder" : "key" },
      h("a", { href: kvHash(key), dataset: { key } },
        h("span", { class: "key-icon", "aria-hidden": "true" }),
        key.endsWith("/") ? h("span", { class: "sr-only" }, "Folder ") : null,
        key.slice(prefix.length))))));
}

function createForm(signal, prefix) {
  const name = h("input", { id: "kv-new-name", type: "text", autocomplete: "off", spellcheck: "false", required: true });
  const value = h("textarea", { id: "kv-new-value", rows: "4", spellcheck: "false" });
  const message = h("p", { class: "field-error", role: "alert" });
  const submit = h("button", { type: "submit", class: "primary" }, "Create");
  async function onsubmit(event) {
    event.preventDefault();
    const rel = name.value.trim();
    message.textContent = "";
    if (!rel || rel.startsWith("/")) {
      message.textContent = "Give the key a name (not starting with /).";
      name.focus();
      return;
    }
    const key = prefix + rel;
    submit.disabled = true;
    try {
      const body = key.endsWith("/") ? "" : value.value;
      const res = await request(`${kvPath(key)}?cas=0`, { method: "PUT", body, signal });
      if (res.data === true) navigate(kvHash(key), `Created ${key}.`);
      else message.textContent = `A key named ${key} already exists; open it to edit it.`;
    } catch (err) {
      if (!signal.aborted) message.textContent = `Could not create ${key}: ${err.message}`;
    } finally {
      submit.disabled = false;
    }
  }
  return h("form", { class: "panel", id: "kv-create", onsubmit, "aria-labelledby": "kv-create-title" },
    h("h2", { id: "kv-create-title" }, "Create a key"),
    h("label", { for: "kv-new-name" }, "Name"),
    h("div", { class: "prefixed" }, prefix ? h("span", { class: "prefix mono" }, prefix) : null, name),
    h("p", { class: "hint" }, "End the name with / to create a folder."),
    h("label", { for: "kv-new-value" }, "Value"), value, message,
    h("div", { class: "actions" }, submit));
}

/** A two-step destructive button: the first click asks, the second acts. */
function confirmControl(label, question, act) {
  const box = h("div", { class: "confirm" });
  const start = h("button", { type: "button", class: "danger" }, label);
  function ask() {
    const yes = h("button", { type: "button", class: "danger" }, `Yes, ${label.toLowerCase()}`);
    const no = h("button", { type: "button" }, "Cancel");
    yes.addEventListener("click", async () => {
      yes.disabled = no.disabled = true;
      await act();
      reset();
    });
    no.addEventListener("click", reset);
    box.replaceChildren(h("span", { role: "alert" }, question), yes, no);
    no.focus();
  }
  function reset() {
    if (box.isConnected) box.replaceChildren(start);
  }
  start.addEventListener("click", ask);
  box.append(start);
  return box;
}

function deleteFolderControl(signal, prefix) {
  return confirmControl("Delete folder", `Delete ${prefix} and every key under it?`, async () => {
    try {
      await request(`${kvPath(prefix)}?recurse`, { method: "DELETE", signal });
      navigate(kvHash(parentOf(prefix)), `Deleted ${prefix} and everything under it.`);
    } catch (err) {
      if (!signal.aborted) flash(`Could not delete ${prefix}: ${err.message}`, "error");
    }
  });
}

function kvKey(main, signal, key) {
  const state = { loaded: null, binary: false }; // loaded: {text, index, flags}
  const problem = problemBox();
  const alert = h("div", { class: "alert", role: "alert", id: "kv-alert" });
  const notice = h("p", { class: "notice", role: "status", id: "kv-notice" });
  const meta = h("dl", { class: "meta", id: "kv-meta" });
  const value = h("textarea", { id: "kv-value", rows: "12", spellcheck: "false" });
  const save = h("button", { type: "submit", class: "primary", id: "kv-save" }, "Save");
  const del = h("div", { class: "delete-slot" });
  const form = h("form", { class: "panel", onsubmit: onSave },
    h("label", { for: "kv-value" }, "Value"), value, h("div", { class: "actions" }, save, del));
  main.append(viewHeading(baseName(key)), breadcrumbs(key), problem.box, alert, notice, meta, form);

  const dirty = () => state.loaded !== null && !state.binary && value.value !== state.loaded.text;

  function apply(entry) {
    if (!entry) {
      state.loaded = null;
      state.binary = false;
      meta.replaceChildren(h("dt", {}, "Status"), h("dd", {}, "This key does not exist yet; Save creates it."));
      save.textContent = "Create";
      value.readOnly = false;
      del.replaceChildren();
      return;
    }
    const decoded = decodeValue(entry.Value);
    state.binary = decoded.text === null;
    state.loaded = { text: decoded.text ?? decoded.base64, index: entry.ModifyIndex, flags: entry.Flags || 0 };
    value.value = state.loaded.text;
    value.readOnly = state.binary;
    save.disabled = state.binary;
    save.textContent = "Save";
    notice.textContent = state.binary ? "This value is binary; it is shown as base64 and cannot be edited here." : "";
    meta.replaceChildren(...[
      ["Size", plural(decoded.size, "byte")], ["Flags", String(entry.Flags || 0)],
      ["Modify index", String(entry.ModifyIndex)], ["Create index", String(entry.CreateIndex)],
      ["Lock", entry.Session ? `held by session ${entry.Session}` : "not held"],
    ].flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
    del.replaceChildren(confirmControl("Delete", `Delete ${key}?`, onDelete));
  }

  async function reload() {
    const res = await request(kvPath(key), { signal });
    alert.replaceChildren();
    notice.textContent = "";
    apply(res.data ? res.data[0] : null);
  }

  async function onSave(event) {
    event.preventDefault();
    const query = state.loaded ? `?cas=${state.loaded.index}&flags=${state.loaded.flags}` : "?cas=0";
    save.disabled = true;
    try {
      const res = await request(kvPath(key) + query, { method: "PUT", body: value.value, signal });
      if (res.data === true) {
        await reload();
        flash(`Saved ${key}.`);
      } else {
        conflict();
      }
    } catch (err) {
      if (!signal.aborted) alert.replaceChildren(h("p", {}, `Could not save: ${err.message}`));
    } finally {
      save.disabled = state.binary;
    }
  }

  async function onDelete() {
    try {
      const res = await request(`${kvPath(key)}?cas=${state.loaded.index}`, { method: "DELETE", signal });
      if (res.data === true) navigate(kvHash(parentOf(key)), `Deleted ${key}.`);
      else conflict();
    } catch (err) {
      if (!signal.aborted) alert.replaceChildren(h("p", {}, `Could not delete: ${err.message}`));
    }
  }

  function conflict() {
    const again = h("button", { type: "button", onclick: () => reload().catch((e) => problem.show(e)) },
      "Reload");
    alert.replaceChildren(h("p", { class: "conflict" }, h("strong", {}, "Not saved. "), CAS_CONFLICT), again);
  }

  watch(signal, kvPath(key), (res) => {
    problem.clear();
    const entry = res.data ? res.data[0] : null;
    const changed = (entry ? entry.ModifyIndex : 0) !== (state.loaded ? state.loaded.index : 0);
    if (!dirty()) apply(entry);
    else if (changed) {
      notice.textContent = entry
        ? "Someone else changed this key after you loaded it. Saving will be refused; reload to see their version."
        : "Someone else deleted this key after you loaded it.";
    }
  }, { onError: problem.show });
}

// ----------------------------------------------------------------------------- shell

let pendingFlash = null;

function flash(text, kind = "info") {
  const el = $("flash");
  el.className = `flash flash-${kind}`;
  el.textContent = text;
}

/** Go to `hash`, showing `message` once the new view is up. */
function navigate(hash, message) {
  pendingFlash = message;
  if (location.hash === hash) restartView();
  else location.hash = hash;
}

const VIEWS = { members: membersView, services: servicesView, kv: kvView };
let viewAbort = null;

function parseRoute() {
  const hash = location.hash;
  if (!hash.startsWith("#/")) return null;
  const [name, ...rest] = hash.slice(2).split("/");
  const path = rest.map((part) => {
    try {
      return decodeURIComponent(part);
    } catch {
      return part;
    }
  }).join("/");
  return { name, path };
}

function restartView() {
  const route = parseRoute();
  if (!route || !VIEWS[route.name]) {
    location.replace("#/members");
    return;
  }
  if (viewAbort) viewAbort.abort();
  viewAbort = new AbortController();
  for (const link of document.querySelectorAll("nav a[data-view]")) {
    if (link.dataset.view === route.name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const main = $("main");
  main.replaceChildren();
  if (pendingFlash) flash(pendingFlash);
  else $("flash").textContent = "";
  pendingFlash = null;
  VIEWS[route.name](main, viewAbort.signal, route.path);
  loadAgentInfo(viewAbort.signal);
}

let agentInfoLoaded = false;

async function loadAgentInfo(signal) {
  if (agentInfoLoaded) return;
  try {
    const self = (await request("/v1/agent/self", { signal })).data;
    const c = self.Config;
    $("agent-info").textContent = `${c.NodeName} · ${c.Datacenter} · v${c.Version}`;
    agentInfoLoaded = true;
  } catch {
    // The views report their own errors; the header just stays terse.
  }
}

function start() {
  setUpTokenDialog();
  $("skip-link").addEventListener("click", (event) => {
    event.preventDefault(); // the fragment is the router's; move focus instead
    $("main").focus();
  });
  window.addEventListener("hashchange", () => {
    restartView();
    const title = $("view-title");
    if (title) title.focus({ preventScroll: true });
  });
  live.set("ok", "");
  restartView();
}

start();
