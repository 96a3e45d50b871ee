// Batchwise dashboard: forms that post to the JSON API (errors shown inline from problem+json),
// and live status and progress polled from the JSON API. Vanilla JS, no build step, no CDN.
"use strict";

const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const JOB_POLL_MS = 1000;
const LIST_POLL_MS = 2000;
const MISSING = "\u2014";

// --- formatting (as the server's render.py does) ---------------------------------------------

function fmt(value, digits = 4) {
  if (value === null || value === undefined || !Number.isFinite(value)) return MISSING;
  if (Number.isInteger(value)) return value.toLocaleString("en-US");
  if (value === 0) return "0";
  let magnitude = Math.floor(Math.log10(Math.abs(value)));
  const rounded = Number(value.toPrecision(digits));
  if (rounded !== 0) magnitude = Math.floor(Math.log10(Math.abs(rounded)));
  if (magnitude >= -3 && magnitude < 12) {
    const decimals = digits - 1 - magnitude;
    const shown = decimals >= 0 ? value : Math.round(value / 10 ** -decimals) * 10 ** -decimals;
    return shown.toLocaleString("en-US", {
      minimumFractionDigits: Math.max(decimals, 0),
      maximumFractionDigits: Math.max(decimals, 0),
    });
  }
  return value.toExponential(digits - 1);
}

function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return MISSING;
  if (seconds < 60) return `${Number(seconds.toPrecision(seconds < 1 ? 2 : 3))} s`;
  const whole = Math.round(seconds);
  const pad = (n) => String(n).padStart(2, "0");
  if (whole < 3600) return `${Math.floor(whole / 60)} min ${pad(whole % 60)} s`;
  return `${Math.floor(whole / 3600)} h ${pad(Math.floor((whole % 3600) / 60))} min`;
}

function percent(fraction) {
  return Number.isFinite(fraction) ? `${Math.round(100 * fraction)}%` : MISSING;
}

// --- talking to the API -----------------------------------------------------------------------

async function readAnswer(response) {
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch {
    return { title: `HTTP ${response.status}`, detail: text.slice(0, 300) };
  }
}

// The key was revoked (or signed out in another tab) while this page was open: sign in again,
// then come back here.
function signInAgain() {
  const here = window.location.pathname + window.location.search;
  window.location.assign(`/ui/sign-in?next=${encodeURIComponent(here)}`);
}

async function getJSON(url) {
  try {
    const response = await fetch(url, { headers: { Accept: "application/json" } });
    if (response.status === 401) signInAgain();
    return response.ok ? await response.json() : null;
  } catch {
    return null; // the service restarting: try again at the next tick
  }
}

// --- problem+json, shown where the user is looking ---------------------------------------------

function locText(loc) {
  const parts = (loc || []).filter((part, i) => !(i === 0 && part === "body"));
  return parts.map((part) => (typeof part === "number" ? `[${part}]` : part)).join(".")
    .replaceAll(".[", "[");
}

function fieldFor(form, loc) {
  // The longest dotted name made of the loc's leading strings that names a form field:
  // ["body", "base", "epochs"] -> "base.epochs"; ["body", "batch_sizes", 2] -> "batch_sizes".
  if (!form) return null;
  const parts = [];
  for (const part of (loc || []).slice(loc && loc[0] === "body" ? 1 : 0)) {
    if (typeof part !== "string") break;
    parts.push(part);
  }
  for (let n = parts.length; n > 0; n -= 1) {
    const field = form.querySelector(`[name="${CSS.escape(parts.slice(0, n).join("."))}"]`);
    if (field) return field;
  }
  return null;
}

function clearStatus(box, form) {
  if (form) {
    for (const field of form.querySelectorAll("[aria-invalid]")) {
      field.removeAttribute("aria-invalid");
    }
  }
  if (box) {
    box.hidden = true;
    box.textContent = "";
    box.className = "form-status";
  }
}

function showInfo(box, text) {
  if (!box) return;
  box.hidden = false;
  box.className = "form-status info";
  box.textContent = text;
}

function showProblem(box, problem, form) {
  if (!box) {
    window.alert(`${problem.title || "Error"}: ${problem.detail || ""}`);
    return;
  }
  box.hidden = false;
  box.className = "form-status error";
  box.textContent = "";
  const summary = document.createElement("p");
  const title = document.createElement("strong");
  title.textContent = problem.title || "Error";
  summary.append(title, document.createTextNode(problem.detail ? `: ${problem.detail}` : ""));
  box.append(summary);
  if (Array.isArray(problem.errors) && problem.errors.length) {
    const list = document.createElement("ul");
    for (const error of problem.errors) {
      const item = document.createElement("li");
      const where = locText(error.loc);
      item.textContent = where ? `${where}: ${error.msg}` : error.msg;
      list.append(item);
      const field = fieldFor(form, error.loc);
      if (field) field.setAttribute("aria-invalid", "true");
    }
    box.append(list);
  }
}

// --- forms ------------------------------------------------------------------------------------

function toNumber(raw) {
  const value = Number(raw);
  return Number.isFinite(value) ? value : raw; // not a number: the API names the field
}

function setPath(target, path, value) {
  let node = target;
  for (const key of path.slice(0, -1)) {
    if (typeof node[key] !== "object" || node[key] === null) node[key] = {};
    node = node[key];
  }
  node[path[path.length - 1]] = value;
}

function jsonBody(form) {
  // Names with dots nest ("base.epochs" -> {base: {epochs}}); data-type says how to read a
  // value; empty fields and fields in a disabled fieldset are left out (the API's default).
  // data-base: a JSON object the fields are written over (a job's settings to start from).
  const body = form.dataset.base ? JSON.parse(form.dataset.base) : {};
  for (const field of form.elements) {
    if (!field.name || field.matches(":disabled")) continue;
    const type = field.dataset.type || "str";
    let value;
    if (type === "bool") {
      value = field.checked;
    } else {
      const raw = field.value.trim();
      if (raw === "") continue;
      if (type === "int" || type === "float") value = toNumber(raw);
      else if (type.startsWith("list-")) value = raw.split(/[\s,;]+/).filter(Boolean).map(toNumber);
      else value = raw;
    }
    setPath(body, field.name.split("."), value);
  }
  return body;
}

function multipartBody(form) {
  const data = new FormData();
  for (const field of form.elements) {
    if (!field.name || field.matches(":disabled")) continue;
    if (field.type === "file") {
      if (field.files.length) data.append(field.name, field.files[0]);
    } else if (field.value.trim() !== "") {
      data.append(field.name, field.value.trim());
    }
  }
  return data;
}

async function submitForm(event) {
  const form = event.target.closest("form.api-form");
  if (!form) return;
  event.preventDefault();
  const box = form.querySelector(".form-status");
  const button = form.querySelector("button[type=submit]");
  clearStatus(box, form);
  const multipart = form.dataset.encoding === "multipart";
  const init = { method: "POST", headers: { Accept: "application/json" } };
  if (multipart) {
    init.body = multipartBody(form);
  } else {
    init.body = JSON.stringify(jsonBody(form));
    init.headers["Content-Type"] = "application/json";
  }
  button.disabled = true;
  showInfo(box, multipart ? "Uploading\u2026" : "Submitting\u2026");
  try {
    const response = await fetch(form.dataset.endpoint || form.getAttribute("action"), init);
    if (response.status === 401) signInAgain();
    const answer = await readAnswer(response);
    if (!response.ok) {
      showProblem(box, answer, form);
      return;
    }
    showInfo(box, "Done: opening it\u2026");
    window.location.assign(form.dataset.redirect.replace("{id}", encodeURIComponent(answer.id)));
  } catch (error) {
    showProblem(box, { title: "No answer from the service", detail: String(error) }, form);
  } finally {
    button.disabled = false;
  }
}

function applySwitch(select) {
  const name = select.dataset.switch;
  for (const fieldset of document.querySelectorAll(`fieldset[data-case^="${name}:"]`)) {
    const active = fieldset.dataset.case === `${name}:${select.value}`;
    fieldset.disabled = !active;
    fieldset.hidden = !active;
  }
}

async function runAction(button) {
  const box = button.closest("section, .card")?.querySelector(".form-status");
  button.disabled = true;
  clearStatus(box, null);
  try {
    const response = await fetch(button.dataset.action, {
      method: "POST",
      headers: { Accept: "application/json" },
    });
    if (response.status === 401) signInAgain();
    if (!response.ok) {
      showProblem(box, await readAnswer(response), null);
      button.disabled = false;
      return;
    }
    window.location.reload();
  } catch (error) {
    showProblem(box, { title: "No answer from the service", detail: String(error) }, null);
    button.disabled = false;
  }
}

// --- live updates -----------------------------------------------------------------------------

function setField(root, name, text) {
  for (const element of root.querySelectorAll(`[data-field="${name}"]`)) {
    if (name === "status") {
      element.className = `status status-${text}`;
    }
    element.textContent = text;
  }
}

function setProgress(root, fraction) {
  for (const bar of root.querySelectorAll('progress[data-field="progress"]')) {
    bar.value = fraction;
    bar.textContent = percent(fraction);
  }
  setField(root, "progress-text", percent(fraction));
}

function every(ms, tick) {
  // Call tick every ms while it returns true; skip ticks while the page is hidden.
  const loop = async () => {
    const again = document.hidden ? true : await tick();
    if (again) window.setTimeout(loop, ms);
  };
  window.setTimeout(loop, ms);
}

function showJob(root, job) {
  setField(root, "status", job.status);
  setProgress(root, job.progress.fraction);
  setField(root, "train_loss", fmt(job.latest.train_loss));
  setField(root, "val_loss", fmt(job.latest.val_loss));
  setField(root, "best_train_loss", fmt(job.best.train_loss));
  setField(root, "best_val_loss", fmt(job.best.val_loss));
  setField(root, "epoch", String(job.progress.epoch));
  const perEpoch = job.progress.steps_per_epoch;
  setField(root, "step", perEpoch ? `${job.progress.step} / ${perEpoch}` : String(job.progress.step));
  setField(root, "eta", duration(job.progress.eta_s));
  setField(root, "samples_seen", fmt(job.samples_seen));
}

function liveJob(section) {
  const id = section.dataset.liveJob;
  let status = section.dataset.status;
  let epoch = Number(section.dataset.epoch);
  if (FINISHED.has(status)) return;
  every(JOB_POLL_MS, async () => {
    const job = await getJSON(`/v1/jobs/${encodeURIComponent(id)}`);
    if (!job) return true;
    if (FINISHED.has(job.status)) {
      window.location.reload(); // the finished page has the final figures, advice and error
      return false;
    }
    status = job.status;
    section.dataset.status = status;
    showJob(section, job);
    if (job.progress.epoch !== epoch && job.progress.epoch > 0) {
      epoch = job.progress.epoch;
      const plot = document.getElementById("loss-plot");
      if (plot) {
        plot.src = `${plot.dataset.plotSrc}?epoch=${epoch}`;
        plot.hidden = false;
        document.querySelector("[data-plot-placeholder]")?.remove();
      }
    }
    return true;
  });
}

function liveTable(table, attribute, idKey) {
  const url = table.getAttribute(attribute);
  const unfinished = () =>
    [...table.querySelectorAll(`tr[${idKey}]`)].filter((row) => !FINISHED.has(row.dataset.status));
  if (!unfinished().length) return;
  every(LIST_POLL_MS, async () => {
    const page = await getJSON(url);
    if (!page) return true;
    const byId = new Map(page.items.map((item) => [item.id, item]));
    for (const row of unfinished()) {
      const item = byId.get(row.getAttribute(idKey));
      if (!item) continue;
      row.dataset.status = item.status;
      setField(row, "status", item.status);
      if (item.progress) {
        setProgress(row, item.progress.fraction);
        setField(row, "train_loss", fmt(item.latest.train_loss));
        setField(row, "val_loss", fmt(item.latest.val_loss));
      }
    }
    return unfinished().length > 0;
  });
}

let curveAxis = null;

function showCurveAxis(link) {
  const plot = document.getElementById(link.dataset.plotTarget);
  if (!plot) return;
  curveAxis = link.dataset.plotAxis;
  plot.setAttribute("src", link.getAttribute("href"));
  for (const other of document.querySelectorAll(`[data-plot-target="${link.dataset.plotTarget}"]`)) {
    other.toggleAttribute("aria-current", other === link);
  }
}

async function refreshRegion(id) {
  // Fetch this page again and swap the region in: the server renders the table, the fit and
  // the plots exactly as on a reload, without losing the scroll position.
  const response = await fetch(window.location.href, { headers: { Accept: "text/html" } });
  if (!response.ok) return;
  const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
  const incoming = fresh.getElementById(id);
  const current = document.getElementById(id);
  if (!incoming || !current) return;
  current.replaceWith(document.adoptNode(incoming));
  if (curveAxis) {
    const link = document.querySelector(`[data-plot-axis="${curveAxis}"]`);
    if (link) showCurveAxis(link);
  }
}

function liveSweep(region) {
  const id = region.dataset.liveSweep;
  if (FINISHED.has(region.dataset.status)) return;
  every(LIST_POLL_MS, async () => {
    const sweep = await getJSON(`/v1/sweeps/${encodeURIComponent(id)}`);
    if (!sweep) return true;
    const current = document.getElementById(region.id);
    const done = Object.entries(sweep.jobs)
      .filter(([status]) => FINISHED.has(status))
      .reduce((sum, [, count]) => sum + count, 0);
    if (sweep.status !== current.dataset.status || String(done) !== current.dataset.done) {
      await refreshRegion(region.id);
    }
    return !FINISHED.has(sweep.status);
  });
}

function liveProbe(region) {
  // As a sweep: swap the region in again when the status or the finished branches change.
  const id = region.dataset.liveProbe;
  if (FINISHED.has(region.dataset.status)) return;
  every(LIST_POLL_MS, async () => {
    const probe = await getJSON(`/v1/probes/${encodeURIComponent(id)}`);
    if (!probe) return true;
    const current = document.getElementById(region.id);
    const done = Object.entries(probe.jobs)
      .filter(([status]) => FINISHED.has(status))
      .reduce((sum, [, count]) => sum + count, 0);
    if (probe.status !== current.dataset.status || String(done) !== current.dataset.done) {
      await refreshRegion(region.id);
    }
    return !FINISHED.has(probe.status);
  });
}

// --- wiring -----------------------------------------------------------------------------------

document.addEventListener("submit", submitForm);
document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (button) {
    runAction(button);
    return;
  }
  const axis = event.target.closest("a[data-plot-axis]");
  if (axis) {
    event.preventDefault();
    showCurveAxis(axis);
  }
});
document.addEventListener("change", (event) => {
  if (event.target.matches("select[data-switch]")) applySwitch(event.target);
});

for (const select of document.querySelectorAll("select[data-switch]")) applySwitch(select);
for (const section of document.querySelectorAll("[data-live-job]")) liveJob(section);
for (const table of document.querySelectorAll("table[data-poll-jobs]")) {
  liveTable(table, "data-poll-jobs", "data-job-id");
}
for (const table of document.querySelectorAll("table[data-poll-sweeps]")) {
  liveTable(table, "data-poll-sweeps", "data-sweep-id");
}
for (const region of document.querySelectorAll("[data-live-sweep]")) liveSweep(region);
for (const region of document.querySelectorAll("[data-live-probe]")) liveProbe(region);
