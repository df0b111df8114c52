// Hermes web UI, the schedules page (#schedules): the user's schedules (GET /api/schedules, asked again every
// SCHEDULES_POLL_MS while the page is open) with when each is next due and how its last firing went; pause,
// resume, run now and delete each; a form that creates a cron schedule of an idea or an agent task; a schedule's
// runs (GET /api/schedules/<id>) with their outcome, lateness and a link to the run. Everything shown as text.
"use strict";

const SCHEDULES_POLL_MS = 5000;
let schedulesTimer = null;
let openSchedule = null;

PAGES.push({
  matches: (hash) => hash === "#schedules",
  enter() {
    $("schedules-view").hidden = false;
    clearInterval(schedulesTimer);
    loadSchedules();
    schedulesTimer = setInterval(loadSchedules, SCHEDULES_POLL_MS);
    $("schedules-title").focus();
  },
  leave() {
    $("schedules-view").hidden = true;
    clearInterval(schedulesTimer);
    schedulesTimer = null;
  },
});

function whenText(w) {
  if (w.kind === "cron") return `cron ${w.cron} (${w.timezone || "UTC"})`;
  if (w.kind === "at") return `once at ${w.at}`;
  if (w.kind === "subject") return `on event ${w.subject}`;
  if (w.kind === "file") return `on file ${w.path}`;
  return `on commit in ${w.path}`;
}

function stamp(value) {
  return value ? new Date(value).toLocaleString() : "—";
}

async function loadSchedules() {
  try {
    const data = await api("/api/schedules");
    show($("schedules-error"), "");
    renderSchedules(data.schedules);
    if (openSchedule) await loadRuns(openSchedule);
    $("schedules-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    show($("schedules-error"), describe(error));
  }
}

function renderSchedules(schedules) {
  const rows = schedules.map((s) => {
    const row = document.createElement("tr");
    row.dataset.scheduleId = s.schedule_id;
    const name = text("button", s.definition.name, "link");
    name.type = "button";
    name.addEventListener("click", () => { openSchedule = s.schedule_id; loadRuns(s.schedule_id); });
    const nameCell = document.createElement("td");
    nameCell.append(name);
    const failing = s.failures_in_row >= 2 ? ` · ${s.failures_in_row} failed or missed in a row` : "";
    row.append(
      nameCell,
      text("td", whenText(s.definition.when)),
      text("td", `${s.definition.action.kind}: ${s.definition.action.text || "workflow"}`),
      text("td", s.status),
      text("td", stamp(s.next_due_at)),
      text("td", `${s.last_outcome || "—"}${failing}`, s.failures_in_row >= 2 ? "error" : ""),
      text("td", `${s.runs_total} run · ${s.missed_total} missed`),
      scheduleActions(s),
    );
    return row;
  });
  const body = $("schedules");
  if (!rows.length) {
    const empty = document.createElement("tr");
    const cell = text("td", "No schedules yet.", "muted");
    cell.colSpan = 8;
    empty.append(cell);
    rows.push(empty);
  }
  body.replaceChildren(...rows);
}

function scheduleActions(s) {
  const cell = document.createElement("td");
  cell.className = "write";
  const actions = [
    s.status === "paused" ? ["resume", "Resume", "secondary"] : ["pause", "Pause", "secondary"],
    ["run", "Run now", "secondary"],
    ["delete", "Delete", "danger"],
  ];
  for (const [action, caption, className] of actions) {
    const button = text("button", caption, className);
    button.type = "button";
    button.dataset.action = action;
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        const path = `/api/schedules/${encodeURIComponent(s.schedule_id)}`;
        if (action === "delete") await api(path, { method: "DELETE" });
        else await api(`${path}/${action}`, { method: "POST", body: "{}" });
        show($("schedules-note"), `${caption}: ${s.definition.name}.`);
        setTimeout(loadSchedules, 500);
      } catch (error) {
        show($("schedules-error"), describe(error));
      } finally {
        button.disabled = false;
      }
    });
    cell.append(button);
  }
  return cell;
}

async function loadRuns(scheduleId) {
  const box = $("schedule-runs");
  try {
    const s = await api(`/api/schedules/${encodeURIComponent(scheduleId)}?runs=50`);
    $("schedule-runs-title").textContent = `Runs of ${s.definition.name}`;
    const items = s.runs.map((r) => {
      const item = document.createElement("li");
      const parts = [r.due_key, r.outcome];
      if (r.reason) parts.push(r.reason);
      if (r.lateness_ms != null) parts.push(`${Math.round(r.lateness_ms)} ms late`);
      if (r.duration_ms != null) parts.push(`took ${(r.duration_ms / 1000).toFixed(1)} s`);
      if (r.error_code) parts.push(r.error_code);
      item.append(text("span", parts.join(" · ")));
      if (r.run_id) {
        const link = document.createElement("a");
        link.href = s.definition.action.kind === "agent" ? `#agent/${r.run_id}` : `#thread=${r.run_id}`;
        link.textContent = " open";
        item.append(link);
      }
      if (r.detail) item.append(text("p", r.detail, "muted small"));
      return item;
    });
    box.replaceChildren(...(items.length ? items : [text("li", "No runs yet.", "muted")]));
    $("schedule-runs-box").hidden = false;
  } catch (error) {
    if (error.status === 404) { openSchedule = null; $("schedule-runs-box").hidden = true; return; }
    show($("schedules-error"), describe(error));
  }
}

async function createSchedule(event) {
  event.preventDefault();
  const kind = $("schedule-kind").value;
  const body = {
    name: $("schedule-name").value,
    when: { kind: "cron", cron: $("schedule-cron").value, timezone: $("schedule-tz").value || "UTC" },
    action: { kind, text: $("schedule-text").value },
    missed: $("schedule-missed").value,
    overlap: $("schedule-overlap").value,
  };
  try {
    const data = await api("/api/schedules", { method: "POST", body: JSON.stringify(body) });
    show($("schedules-error"), "");
    show($("schedules-note"), `Created ${body.name} (${data.schedule_id}).`);
    $("schedule-form").reset();
    setTimeout(loadSchedules, 500);
  } catch (error) {
    show($("schedules-error"), describe(error));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("schedule-tz").value = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  $("schedule-form").addEventListener("submit", createSchedule);
});
