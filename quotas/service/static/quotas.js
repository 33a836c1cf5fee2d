// The quotas page's scripts: the limits editor and the SSH keys section. The server decides who may
// do what; these only edit the rows the page already shows, through the REST API, and show the
// API's answer (its `problems` for a refusal) next to the row.
"use strict";

// The page's words in its language (page.py's SCRIPT_TEXTS, said by the server), by key; `{name}`
// placeholders filled in by say(). The script writes no sentence of its own.
const TEXTS = JSON.parse((document.getElementById("quotas-texts") || {}).textContent || "{}");

function say(key, values) {
  const text = TEXTS[key] || key;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (values && name in values ? String(values[name]) : whole));
}

// One request to the quotas service's REST API, as the logged-in person (the `_xsrf` cookie the
// service sets for its own path, else the page's copy of the token, as X-XSRFToken).
// Answers { data, etag }; a refusal throws { message, problems, status } with the API's words.
async function apiCall(pageXsrf, method, url, body, extra) {
  const match = document.cookie.match(/(?:^|;\s*)_xsrf=([^;]*)/);
  const xsrf = match ? decodeURIComponent(match[1]) : pageXsrf;
  const headers = { "X-XSRFToken": xsrf, Accept: "application/json", ...(extra || {}) };
  const init = { method, headers, credentials: "same-origin" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (err) {
    throw { message: say("no_answer", { error: err.message }), problems: [] };
  }
  if (response.status === 204) return { data: null, etag: null };
  let data = null;
  try {
    data = await response.json();
  } catch (err) {
    data = null;
  }
  if (!response.ok) {
    throw {
      message: (data && data.message) || say("answered", { status: response.status, reason: response.statusText }),
      problems: (data && data.problems) || [],
      status: response.status,
    };
  }
  return { data, etag: response.headers.get("ETag") };
}

// A Remove (or Stop) button acts at the second click: the first one arms it ("Confirm remove") for
// 5 seconds; a dialog would block the page. True when this click is the second. `action`: "remove"
// or "stop", the keys of the button's words.
function confirmed(button, action = "remove") {
  if (button.classList.contains("armed")) return true;
  button.classList.add("armed", "btn-danger");
  button.classList.remove("btn-outline-danger");
  button.textContent = say(`confirm_${action}`);
  setTimeout(() => {
    if (!button.isConnected) return;
    button.classList.remove("armed", "btn-danger");
    button.classList.add("btn-outline-danger");
    button.textContent = say(action);
  }, 5000);
  return false;
}

// The tenant's running servers (admins' table): Stop, at the second click, through the REST API
// (DELETE api/tenants/<t>/servers/<user>[/<server>]), which stops only servers the hub charges to
// this tenant. Tenant admins have no server buttons on the hub's admin page: this is theirs.
(() => {
  const table = document.getElementById("tenant-servers-table");
  if (!table || !table.dataset.api) return;
  table.addEventListener("click", async (event) => {
    const button = event.target.closest("button.stop");
    if (!button || !confirmed(button, "stop")) return;
    const row = button.closest("tr");
    const status = row.querySelector(".stop-status");
    const path = [row.dataset.user, row.dataset.server].filter(Boolean).map(encodeURIComponent).join("/");
    button.disabled = true;
    try {
      await apiCall(table.dataset.xsrf, "DELETE", table.dataset.api + path);
      button.remove();
      status.textContent = say("stopped");
    } catch (error) {
      button.disabled = false;
      status.textContent = error.message;
    }
  });
})();

// The limits editor: edit, add and remove delegated limits in place
// (PUT/DELETE api/tenants/<t>/limits/<users|groups>/<name>).
(() => {
  const table = document.getElementById("limits-editor");
  if (!table) return;
  const api = table.dataset.api;
  const tbody = table.tBodies[0];
  const live = document.getElementById("limits-status");
  const NONE = "—";

  const call = (method, url, body, extra) => apiCall(table.dataset.xsrf, method, url, body, extra);

  function label(field) {
    if (field.startsWith("gpus.")) return say("field_gpus", { gpu: field.slice(5) });
    return `field_${field}` in TEXTS ? say(`field_${field}`) : field;
  }

  function limitUrl(kind, name) {
    return `${api}${kind === "group" ? "groups" : "users"}/${encodeURIComponent(name)}`;
  }

  // The JSON body of a limit from the editor's text fields (empty: no limit on that field).
  // Whole numbers go as numbers; anything else as typed, so the API names what is wrong with it.
  function bodyOf(values) {
    const body = {};
    const gpus = {};
    for (const [field, raw] of Object.entries(values)) {
      const text = raw.trim();
      if (text === "") continue;
      const counted = /^-?[0-9]+$/.test(text) ? Number(text) : text;
      if (field.startsWith("gpus.")) gpus[field.slice(5)] = counted;
      else if (field === "servers") body.servers = counted;
      else body[field] = text;
    }
    if (Object.keys(gpus).length) body.gpus = gpus;
    return body;
  }

  // The editor's values of a stored limit (the API's JSON).
  function valuesOf(limit, fields) {
    const values = {};
    for (const field of fields) {
      const raw = field.startsWith("gpus.") ? (limit.gpus || {})[field.slice(5)] : limit[field];
      values[field] = raw === null || raw === undefined ? "" : String(raw);
    }
    return values;
  }

  // The precondition of a write over what this row shows: If-Match with the ETag the page was
  // given (or the last save answered); a new limit is written only if none exists yet.
  function precondition(row) {
    return row && row.dataset.etag ? { "If-Match": row.dataset.etag } : { "If-None-Match": "*" };
  }

  // After a 412 (another admin changed the limit), take the stored limit's ETag, so that saving
  // again, after reading what it is now (the message says), writes over it knowingly.
  async function refreshEtag(row) {
    try {
      const { etag } = await call("GET", limitUrl(row.dataset.kind, row.dataset.name));
      row.dataset.etag = etag || "";
    } catch (error) {
      if (error.status === 404) row.dataset.etag = "";
    }
  }

  function fieldCells(row) {
    return Array.from(row.querySelectorAll("td[data-field]"));
  }

  function announce(text) {
    if (live) live.textContent = text;
  }

  // The row under `row` that lists what the API refused (created on demand).
  function problemsRow(row) {
    let next = row.nextElementSibling;
    if (!next || !next.classList.contains("limit-problems")) {
      next = document.createElement("tr");
      next.className = "limit-problems";
      const cell = document.createElement("td");
      cell.colSpan = row.children.length;
      next.appendChild(cell);
      row.after(next);
    }
    return next;
  }

  function showProblems(row, error) {
    const box = document.createElement("div");
    box.className = "alert alert-danger mb-0 py-2";
    box.setAttribute("role", "alert");
    const message = document.createElement("div");
    message.textContent = error.message;
    box.appendChild(message);
    if (error.problems && error.problems.length) {
      const list = document.createElement("ul");
      list.className = "mb-0 problems";
      for (const problem of error.problems) {
        const item = document.createElement("li");
        item.textContent = problem;
        list.appendChild(item);
      }
      box.appendChild(list);
    }
    problemsRow(row).firstElementChild.replaceChildren(box);
  }

  function clearProblems(row) {
    const next = row.nextElementSibling;
    if (next && next.classList.contains("limit-problems")) next.remove();
  }

  function button(text, cls, onClick) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = `btn btn-sm ${cls} me-1`;
    b.textContent = text;
    b.addEventListener("click", onClick);
    return b;
  }

  // The words of a limit's kind and name, for the sentences about it ({kind} {name}).
  function describe(row) {
    return { kind: say(row.dataset.kind), name: row.dataset.name };
  }

  function showValues(row, values, saved) {
    for (const cell of fieldCells(row)) {
      const value = values[cell.dataset.field] || "";
      cell.dataset.value = value;
      cell.textContent = value || NONE;
    }
    row.classList.remove("editing");
    const actions = row.querySelector("td.actions");
    actions.replaceChildren(
      button(say("edit"), "btn-outline-primary edit", () => startEditing(row)),
      button(say("remove"), "btn-outline-danger remove", (event) => remove(row, event.currentTarget)),
    );
    if (saved) {
      const badge = document.createElement("span");
      badge.className = "badge text-bg-success saved";
      badge.textContent = say("saved");
      actions.appendChild(badge);
    }
  }

  function startEditing(row) {
    row.classList.add("editing");
    for (const cell of fieldCells(row)) {
      const input = document.createElement("input");
      input.className = "form-control form-control-sm";
      input.name = cell.dataset.field;
      input.value = cell.dataset.value || "";
      input.placeholder = say("no_limit");
      input.setAttribute("aria-label", say("field_of", { field: label(cell.dataset.field), ...describe(row) }));
      input.addEventListener("keydown", (event) => {
        if (event.key === "Enter") save(row);
        if (event.key === "Escape") cancel(row);
      });
      cell.replaceChildren(input);
    }
    row.querySelector("td.actions").replaceChildren(
      button(say("save"), "btn-primary save", () => save(row)),
      button(say("cancel"), "btn-outline-secondary cancel", () => cancel(row)),
    );
    const first = row.querySelector("input");
    if (first) first.focus();
  }

  function cancel(row) {
    clearProblems(row);
    const values = {};
    for (const cell of fieldCells(row)) values[cell.dataset.field] = cell.dataset.value || "";
    showValues(row, values, false);
  }

  function typedValues(container) {
    const values = {};
    for (const input of container.querySelectorAll("input[name]")) {
      if (input.name !== "name") values[input.name] = input.value;
    }
    return values;
  }

  async function save(row) {
    const values = typedValues(row);
    const buttons = row.querySelectorAll("button");
    buttons.forEach((b) => (b.disabled = true));
    try {
      const url = limitUrl(row.dataset.kind, row.dataset.name);
      const { data: stored, etag } = await call("PUT", url, bodyOf(values), precondition(row));
      row.dataset.etag = etag || "";
      clearProblems(row);
      showValues(row, valuesOf(stored, Object.keys(values)), true);
      announce(say("saved_limit", describe(row)));
    } catch (error) {
      if (error.status === 412) {
        await refreshEtag(row);
        error.problems = [say("save_again")];
      }
      showProblems(row, error);
      announce(say("not_saved", describe(row)));
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
  }

  async function remove(row, clicked) {
    if (!confirmed(clicked)) return;
    clicked.disabled = true;
    try {
      await call("DELETE", limitUrl(row.dataset.kind, row.dataset.name));
      clearProblems(row);
      row.remove();
      announce(say("removed_limit", describe(row)));
      updateEmpty();
    } catch (error) {
      clicked.disabled = false;
      showProblems(row, error);
    }
  }

  function updateEmpty() {
    const empty = tbody.querySelector("tr.no-limits");
    if (empty) empty.classList.toggle("d-none", tbody.querySelector("tr.limit-row") !== null);
  }

  function findRow(kind, name) {
    return Array.from(tbody.querySelectorAll("tr.limit-row")).find(
      (r) => r.dataset.kind === kind && r.dataset.name === name,
    );
  }

  async function add() {
    const form = document.getElementById("limit-add");
    const kind = form.querySelector("select[name=kind]").value;
    const name = form.querySelector("input[name=name]").value.trim();
    if (!name) {
      showProblems(form, { message: say("name_first", { kind: say(kind) }), problems: [] });
      return;
    }
    const values = typedValues(form);
    const addButton = form.querySelector("button.add");
    addButton.disabled = true;
    try {
      let row = findRow(kind, name);
      const { data: stored, etag } = await call("PUT", limitUrl(kind, name), bodyOf(values), precondition(row));
      clearProblems(form);
      if (!row) {
        row = document.getElementById("limit-row-template").content.firstElementChild.cloneNode(true);
        row.dataset.kind = kind;
        row.dataset.name = name;
        row.querySelector(".limit-kind").textContent = say(kind);
        row.querySelector(".limit-name").textContent = name;
        tbody.insertBefore(row, tbody.querySelector("tr.no-limits"));
      }
      row.dataset.etag = etag || "";
      clearProblems(row);
      showValues(row, valuesOf(stored, Object.keys(values)), true);
      for (const input of form.querySelectorAll("input")) input.value = "";
      updateEmpty();
      announce(say("saved_limit", { kind: say(kind), name }));
    } catch (error) {
      showProblems(form, error);
    } finally {
      addButton.disabled = false;
    }
  }

  for (const row of tbody.querySelectorAll("tr.limit-row")) {
    const values = {};
    for (const cell of fieldCells(row)) values[cell.dataset.field] = cell.dataset.value || "";
    showValues(row, values, false);
  }
  document.querySelector("#limit-add button.add").addEventListener("click", add);
  document.querySelector("#limit-add").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && event.target.tagName === "INPUT") add();
  });
})();

// The "SSH keys" section: the caller's own keys, added by pasting and removed in place through
// the REST API (POST api/ssh-keys, DELETE api/ssh-keys/<id>); refusals show the API's reasons.
(() => {
  const table = document.getElementById("ssh-keys-table");
  const form = document.getElementById("ssh-key-add");
  if (!table || !form) return;
  const api = table.dataset.api;
  const tbody = table.tBodies[0];
  const status = document.getElementById("ssh-keys-status");

  const call = (method, url, body) => apiCall(table.dataset.xsrf, method, url, body);


  function show(kind, message, problems) {
    const box = document.createElement("div");
    box.className = `alert alert-${kind} py-2 mb-0`;
    box.setAttribute("role", kind === "danger" ? "alert" : "status");
    const text = document.createElement("div");
    text.textContent = message;
    box.appendChild(text);
    const extra = (problems || []).filter((p) => !message.includes(p));
    if (extra.length) {
      const list = document.createElement("ul");
      list.className = "mb-0 problems";
      for (const problem of extra) {
        const item = document.createElement("li");
        item.textContent = problem;
        list.appendChild(item);
      }
      box.appendChild(list);
    }
    status.replaceChildren(box);
  }

  function formatTime(iso) {
    return iso ? say("minute", { date: iso.slice(0, 10), time: iso.slice(11, 16) }) : say("never");
  }

  function updateEmpty() {
    tbody.querySelector("tr.no-ssh-keys").classList.toggle("d-none", tbody.querySelector("tr.ssh-key") !== null);
  }

  function cell(text, code) {
    const td = document.createElement("td");
    if (code) {
      const c = document.createElement("code");
      c.textContent = text;
      td.appendChild(c);
    } else {
      td.textContent = text;
    }
    return td;
  }

  function rowOf(key) {
    const row = document.createElement("tr");
    row.className = "ssh-key";
    row.dataset.id = String(key.id);
    const title = cell(key.title);
    title.className = "ssh-key-title";
    const actions = document.createElement("td");
    actions.className = "actions text-nowrap";
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "btn btn-sm btn-outline-danger remove";
    remove.textContent = say("remove");
    actions.appendChild(remove);
    row.append(title, cell(key.type), cell(key.fingerprint, true), cell(formatTime(key.created)), cell(formatTime(key.last_used)), actions);
    return row;
  }

  async function remove(row, clicked) {
    if (!confirmed(clicked)) return;
    clicked.disabled = true;
    const title = row.querySelector(".ssh-key-title").textContent;
    try {
      await call("DELETE", `${api}/${encodeURIComponent(row.dataset.id)}`);
      row.remove();
      updateEmpty();
      show("success", say("removed_key", { title }));
    } catch (error) {
      clicked.disabled = false;
      show("danger", error.message, error.problems);
    }
  }

  tbody.addEventListener("click", (event) => {
    const clicked = event.target.closest("button.remove");
    if (clicked) remove(clicked.closest("tr"), clicked);
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = form.elements.public_key.value.trim();
    const title = form.elements.title.value.trim();
    if (!text) {
      show("danger", say("paste_first"));
      return;
    }
    const addButton = form.querySelector("button.add");
    addButton.disabled = true;
    try {
      const body = title ? { public_key: text, title } : { public_key: text };
      const { data: key } = await call("POST", api, body);
      tbody.insertBefore(rowOf(key), tbody.querySelector("tr.no-ssh-keys"));
      updateEmpty();
      form.reset();
      show("success", say("added_key", { title: key.title, fingerprint: key.fingerprint }));
    } catch (error) {
      show("danger", error.message, error.problems);
    } finally {
      addButton.disabled = false;
    }
  });
})();
