// Hermes web UI, the agent page (#agent, #agent/<run_id>): start a run (task, optional profile from
// GET /api/agent/profiles, optional project: POST /api/agent/runs), then watch it step by step: GET
// /api/agent/runs/<id> for what happened so far, then the run's thread stream (GET /api/threads/<id>/events, SSE,
// the same reconnect and Last-Event-ID handling as a thread in app.js) for the rest, live. Each model turn (its
// text streamed by token), each tool call with the permission decision, its approval (answered here, see
// approvals.js), its output; the answer; Cancel; the user's recent runs. Every handler updates the step it is
// about (by job, call or approval id) instead of appending, so an event seen in the snapshot and again on the
// stream is shown once. Model text, answers and tool output are shown as sanitised Markdown (markdown.js).
"use strict";

const AGENT_RUN_ID = /^#agent\/([A-Za-z0-9_-]{1,128})$/;
const AGENT_FINISHED = ["completed", "failed", "cancelled"];
const AGENT_TURN_KIND = "agent_turn";
const DECISION_LABEL = { allow: "allowed", ask: "needs approval", deny: "denied" };
const TOOL_STATE_LABEL = {
  requested: "requested", awaiting_approval: "awaiting approval", approved: "approved", rejected: "rejected",
  expired: "approval expired", denied: "denied", dispatched: "dispatched", running: "running", completed: "done",
  error: "done, with an error", failed: "failed",
};
const OPEN_OUTPUT_CHARS = 1500; // shorter output is shown unfolded

let run = null; // on screen: { id, source, lastSeq, status, turns: Map, jobs: Map, calls: Map, approvals: Map }
let agentProfiles = null; // GET /api/agent/profiles (once it answered)

PAGES.push({
  matches: (hash) => hash === "#agent" || AGENT_RUN_ID.test(hash),
  enter(hash) {
    $("agent-view").hidden = false;
    const match = hash.match(AGENT_RUN_ID);
    $("agent-form").hidden = Boolean(match);
    $("agent-new-link").hidden = !match;
    if (match) {
      if (!run || run.id !== match[1]) openRun(match[1]);
    } else {
      closeRun();
    }
    loadProfiles();
    loadRuns();
    $("agent-title").focus();
  },
  leave() {
    $("agent-view").hidden = true;
    closeRun();
  },
});

// ---------------------------------------------------------------- starting a run

async function loadProfiles() {
  if (agentProfiles) return;
  try {
    agentProfiles = (await api("/api/agent/profiles")).profiles;
  } catch (error) {
    $("agent-profile-info").textContent = `No profiles to pick from (${describe(error)}): Hermes picks one.`;
    return;
  }
  const select = $("agent-profile");
  select.replaceChildren(new Option("pick for me", ""), ...agentProfiles.map((p) => new Option(p.name, p.name)));
  describeProfile();
}

function describeProfile() {
  const p = (agentProfiles || []).find((candidate) => candidate.name === $("agent-profile").value);
  $("agent-profile-info").textContent = p
    ? `${p.description || p.name} · tools: ${p.tools.join(", ") || "none"} · at most ${p.max_iterations} turns`
    : "Hermes picks the profile from the task.";
}

$("agent-profile").addEventListener("change", describeProfile);

$("agent-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  show($("agent-form-error"), "");
  const task = $("agent-task").value;
  if (!task.trim()) { show($("agent-form-error"), "Say what the agent should do."); return; }
  const body = { task };
  if ($("agent-profile").value) body.profile = $("agent-profile").value;
  if ($("agent-project").value.trim()) body.project = $("agent-project").value.trim();
  $("agent-submit").disabled = true;
  try {
    const data = await api("/api/agent/runs", { method: "POST", body: JSON.stringify(body) });
    $("agent-task").value = "";
    location.hash = `agent/${data.run_id}`; // hashchange opens it (and lists it with the recent runs)
  } catch (error) {
    show($("agent-form-error"), describe(error));
  } finally {
    $("agent-submit").disabled = false;
  }
});

// ---------------------------------------------------------------- the user's recent runs

async function loadRuns() {
  try {
    const data = await api("/api/agent/runs");
    $("agent-runs").replaceChildren(...data.runs.map(runItem));
    if (!data.runs.length) $("agent-runs").replaceChildren(text("li", "none yet", "muted"));
  } catch (error) {
    $("agent-runs").replaceChildren(text("li", `unavailable (${describe(error)})`, "muted"));
  }
}

function runItem(r) {
  const link = document.createElement("a");
  link.href = `#agent/${r.run_id}`;
  const status = run && run.id === r.run_id ? run.status : r.status; // the open run's is the live one
  const badge = text("span", statusLabel(status), "status");
  badge.dataset.status = status;
  const meta = [r.profile, r.created_at ? `${new Date(r.created_at).toLocaleString()}` : ""].filter(Boolean);
  link.append(text("span", r.task, "run-task"), badge, text("span", meta.join(" · "), "muted small"));
  const item = document.createElement("li");
  item.dataset.runId = r.run_id;
  item.append(link);
  return item;
}

// ---------------------------------------------------------------- one run, live

function closeRun() {
  if (run && run.source) run.source.close();
  run = null;
  $("agent-run").hidden = true;
}

async function openRun(runId) {
  closeRun();
  const current = {
    id: runId, source: null, lastSeq: 0, status: "", turns: new Map(), jobs: new Map(), calls: new Map(),
    approvals: new Map(),
  };
  run = current;
  $("agent-run").hidden = false;
  $("agent-run-id").textContent = runId;
  $("agent-run-task").textContent = "…";
  $("agent-run-info").textContent = "";
  show($("agent-run-error"), "");
  $("agent-steps").replaceChildren();
  $("agent-answer").replaceChildren();
  $("agent-answer-box").hidden = true;
  setRunStatus("running");
  setAgentConnection("closed");
  try {
    const data = await api(`/api/agent/runs/${encodeURIComponent(runId)}`);
    if (run === current) applySnapshot(data);
  } catch (error) {
    // 404: not in the read model yet (just started): the stream has all of it.
    if (run === current && error.status !== 404) show($("agent-run-error"), describe(error));
  }
  if (run === current && !runFinished()) listenRun(current);
}

function applySnapshot(data) {
  $("agent-run-task").textContent = data.task || "…";
  if (data.profile) $("agent-run-info").textContent = profileLine(data.profile, data.profile_reason, data.project);
  for (const step of data.steps || []) applyRunEvent(step.type, step);
  for (const a of data.approvals || []) {
    // What the steps may not say yet: an approval's outcome.
    if (!run.approvals.has(a.approval_id)) {
      applyRunEvent("approval_requested", { ...a, name: a.name || a.tool });
    }
    if (a.status === "granted") applyRunEvent("approval_granted", { ...a, by: a.decided_by });
    if (a.status === "denied") applyRunEvent("approval_denied", { ...a, by: a.decided_by });
    if (a.status === "expired") applyRunEvent("approval_expired", a);
  }
  if (AGENT_FINISHED.includes(data.status) && !runFinished()) {
    if (data.status === "completed") applyRunEvent("agent_run_completed", data);
    else if (data.status === "cancelled") applyRunEvent("agent_run_cancelled", { reason: data.reason });
    else applyRunEvent("agent_run_failed", { reason: data.reason, message: data.message, partial: "" });
  } else if (data.status && !runFinished()) {
    setRunStatus(data.status);
  }
}

function listenRun(current) {
  // As app.js's listen(): EventSource resumes after a dropped connection with Last-Event-ID; a stream the browser
  // gave up on is reopened from the start; an event whose id was applied already is skipped, and tokens are
  // deduplicated per job by their seq. Events come named (event: <type>) or, unnamed, with their "type".
  const source = new EventSource(`/api/threads/${encodeURIComponent(current.id)}/events`);
  current.source = source;
  const deliver = (message, named) => {
    if (run !== current) return;
    if (named !== "token" && message.lastEventId) {
      const seq = Number(message.lastEventId);
      if (seq <= current.lastSeq) return; // replayed after a reconnect: already on screen
      current.lastSeq = seq;
    }
    let data;
    try { data = JSON.parse(message.data); } catch { return; }
    applyRunEvent(named || data.type, data);
  };
  for (const type of Object.keys(RUN_HANDLERS)) source.addEventListener(type, (m) => deliver(m, type));
  source.onmessage = (m) => deliver(m, null);
  source.onopen = () => { if (run === current) setAgentConnection("live"); };
  source.onerror = () => {
    if (run !== current || runFinished()) return;
    setAgentConnection("reconnecting");
    if (source.readyState === EventSource.CLOSED) {
      setTimeout(async () => {
        if (run !== current || runFinished() || current.source !== source) return;
        if (await signedOut()) return;
        listenRun(current);
      }, RECONNECT_MS);
    }
  };
}

function applyRunEvent(type, e) {
  const handler = RUN_HANDLERS[type];
  if (handler && run) handler(e);
}

function runFinished() {
  return AGENT_FINISHED.includes(run.status);
}

function finishRun() {
  if (run.source) run.source.close();
  setAgentConnection("closed");
  $("agent-cancel").hidden = true;
  for (const form of $("agent-steps").querySelectorAll(".approval-actions")) {
    for (const control of form.querySelectorAll("input, button")) control.disabled = true;
  }
  loadRuns();
  refreshApprovalsBadge();
}

function setAgentConnection(state) {
  const label = { live: "· live", reconnecting: "· reconnecting…", closed: "" }[state];
  $("agent-connection").textContent = label;
  $("agent-connection").dataset.state = state;
}

function setRunStatus(status) {
  run.status = status;
  const badge = $("agent-run-status");
  badge.dataset.status = status;
  badge.textContent = statusLabel(status);
  $("agent-cancel").hidden = AGENT_FINISHED.includes(status);
}

function statusLabel(status) {
  return String(status || "unknown").replaceAll("_", " ");
}

function profileLine(profile, reason, project) {
  return [`Profile ${profile}${reason ? ` (${reason})` : ""}`, project ? `project ${project}` : ""]
    .filter(Boolean).join(" · ");
}

function pendingApprovals() {
  return [...run.approvals.values()].filter((a) => a.state === "pending").length;
}

$("agent-cancel").addEventListener("click", async () => {
  if (!run || !window.confirm("Cancel this run? A running tool call is stopped too.")) return;
  const current = run;
  $("agent-cancel").disabled = true;
  try {
    await api(`/api/agent/runs/${encodeURIComponent(current.id)}/cancel`, { method: "POST", body: "{}" });
    if (run === current) $("agent-run-info").textContent += " · cancelling…";
  } catch (error) {
    if (run === current) show($("agent-run-error"), describe(error));
  } finally {
    $("agent-cancel").disabled = false;
  }
});

// ---------------------------------------------------------------- steps: model turns and tool calls

function step(className) {
  const item = document.createElement("li");
  item.className = `step ${className}`;
  $("agent-steps").append(item);
  return item;
}

function turn(key) {
  // A model turn's step, by its job id (or iteration): { item, title, body, meta }.
  if (!run.turns.has(key)) {
    const item = step("turn");
    const head = document.createElement("div");
    head.className = "step-head";
    const title = text("span", `Turn ${run.turns.size + 1}`, "step-title");
    const meta = text("span", "", "muted small");
    head.append(title, meta);
    const body = document.createElement("div");
    body.className = "turn-text markdown";
    body.hidden = true;
    item.append(head, body);
    run.turns.set(key, { item, title, body, meta, done: false });
  }
  return run.turns.get(key);
}

function runJob(jobId) {
  if (!run.jobs.has(jobId)) run.jobs.set(jobId, { text: "", nextSeq: 0 });
  return run.jobs.get(jobId);
}

function call(callId, name) {
  // A tool call's step, by its call id.
  if (!run.calls.has(callId)) {
    const item = step("tool-call");
    item.dataset.callId = callId;
    const head = document.createElement("div");
    head.className = "step-head";
    const tool = text("code", name || "tool", "tool-name");
    const decision = text("span", "", "chip decision");
    decision.hidden = true;
    const state = text("span", "", "status tool-state");
    const meta = text("span", "", "muted small");
    head.append(text("span", "Tool", "step-title"), tool, decision, text("span", "", "spacer"), meta, state);
    const reason = text("p", "", "muted small reason");
    reason.hidden = true;
    const args = document.createElement("div");
    args.className = "tool-args";
    const approval = document.createElement("div");
    approval.className = "approval";
    approval.hidden = true;
    const output = document.createElement("details");
    output.className = "tool-output";
    output.hidden = true;
    const summary = text("summary", "Output");
    const outputBody = document.createElement("div");
    outputBody.className = "markdown output";
    output.append(summary, outputBody);
    const error = text("p", "", "error");
    error.hidden = true;
    item.append(head, reason, args, approval, output, error);
    run.calls.set(callId, {
      item, tool, decision, state, meta, reason, args, approval, output, summary, outputBody, error,
    });
  }
  const c = run.calls.get(callId);
  if (name) c.tool.textContent = name;
  return c;
}

function setCallState(c, state) {
  c.state.dataset.status = state;
  c.state.textContent = TOOL_STATE_LABEL[state] || statusLabel(state);
}

function setArguments(c, args) {
  if (args === undefined) return;
  c.args.replaceChildren(jsonBlock(args));
}

function approvalOf(e) {
  // The approval's state on screen (by approval id), its call's step created if need be.
  if (!run.approvals.has(e.approval_id)) {
    run.approvals.set(e.approval_id, { callId: e.call_id, state: "pending", box: null });
  }
  const a = run.approvals.get(e.approval_id);
  if (!a.callId && e.call_id) a.callId = e.call_id;
  return a;
}

function closeApproval(e, state, outcome, isError = false) {
  const a = approvalOf(e);
  a.state = state;
  if (a.callId) {
    const c = call(a.callId);
    c.approval.hidden = false;
    for (const done of c.approval.querySelectorAll(".approval-actions, .approval-deadline")) done.remove();
    const asked = c.approval.querySelector(".approval-head strong");
    if (asked) asked.textContent = "Approval asked";
    let line = c.approval.querySelector(".approval-outcome");
    if (!line) {
      line = text("p", "", "approval-outcome");
      c.approval.append(line);
    }
    line.textContent = outcome;
    line.classList.toggle("error", isError);
    setCallState(c, state);
  }
  if (!runFinished()) setRunStatus(pendingApprovals() ? "awaiting_approval" : "running");
  refreshApprovalsBadge();
}

function withComment(words, comment) {
  return comment ? `${words}: “${comment}”` : words;
}

const RUN_HANDLERS = {
  agent_run_started(e) {
    $("agent-run-task").textContent = e.task;
    const parts = [profileLine(e.profile, e.profile_reason, e.project)];
    if (e.tools) parts.push(`tools: ${e.tools.join(", ") || "none"}`);
    if (e.max_iterations) parts.push(`at most ${e.max_iterations} turns`);
    $("agent-run-info").textContent = parts.join(" · ");
    if (!runFinished()) setRunStatus(pendingApprovals() ? "awaiting_approval" : "running");
  },
  job_queued(e) {
    if (e.kind && e.kind !== AGENT_TURN_KIND) return;
    const t = turn(e.job_id);
    if (!t.done) t.meta.textContent = "waiting for a model…";
  },
  execution_started(e) {
    if (!run.turns.has(e.job_id)) return;
    const t = turn(e.job_id);
    if (!t.done) t.meta.textContent = `${e.backend ? `${e.backend} · ${e.model} · ` : ""}thinking…`;
  },
  token(e) {
    const j = runJob(e.job_id);
    if (e.seq < j.nextSeq) return; // already shown
    if (e.seq > j.nextSeq) j.text += /^\s/.test(e.text) ? "…" : "… "; // sent while no stream was open
    j.text += e.text;
    j.nextSeq = e.seq + 1;
    const t = turn(e.job_id);
    if (t.done) return;
    t.body.hidden = false;
    showMarkdown(t.body, j.text);
    t.body.classList.toggle("streaming", !e.done);
  },
  execution_failed(e) {
    if (!run.turns.has(e.job_id)) return;
    const t = turn(e.job_id);
    if (!t.done) t.meta.textContent = `${e.retryable ? "retrying" : "failed"}: ${e.message}`;
  },
  model_turn_completed(e) {
    const t = turn(e.job_id || `iteration-${e.iteration}`);
    t.done = true;
    t.title.textContent = `Turn ${e.iteration}`;
    const calls = e.tool_calls || [];
    const tokens = (e.prompt_tokens || 0) + (e.completion_tokens || 0);
    t.meta.textContent = [calls.length ? `asks for ${calls.map((c) => c.name).join(", ")}` : "answers (below)",
                          tokens ? `${tokens} tokens` : ""].filter(Boolean).join(" · ");
    t.body.classList.remove("streaming");
    t.body.hidden = !e.text || !calls.length; // a turn without tool calls is the answer, shown as such
    if (e.text) showMarkdown(t.body, e.text);
    for (const c of calls) {
      const shown = call(c.call_id, c.name);
      setArguments(shown, c.arguments);
      if (!shown.state.dataset.status) setCallState(shown, "requested");
    }
  },
  tool_call_requested(e) {
    const c = call(e.call_id, e.name);
    setArguments(c, e.arguments);
    c.decision.hidden = false;
    c.decision.dataset.decision = e.decision;
    c.decision.textContent = DECISION_LABEL[e.decision] || e.decision;
    const why = [e.reason, e.rule ? `rule ${e.rule}` : ""].filter(Boolean).join(" · ");
    c.reason.textContent = why;
    c.reason.hidden = !why;
    if (!c.state.dataset.status || c.state.dataset.status === "requested") {
      setCallState(c, { allow: "requested", ask: "awaiting_approval", deny: "denied" }[e.decision] || "requested");
    }
  },
  approval_requested(e) {
    const a = approvalOf(e);
    const c = call(e.call_id, e.name);
    setArguments(c, e.arguments);
    if (a.box) return; // shown already
    a.box = document.createElement("div");
    a.box.dataset.approvalId = e.approval_id;
    const head = text("p", "", "approval-head");
    head.append(text("strong", "Your approval is needed"),
                document.createTextNode(e.reason ? `: ${e.reason}` : "."));
    if (e.expires_at) {
      head.append(text("span", ` (unanswered by ${clock(e.expires_at)}: denied)`, "muted small approval-deadline"));
    }
    a.box.append(head);
    if (a.state === "pending") a.box.append(approvalActions(e.approval_id, () => {}));
    c.approval.replaceChildren(a.box);
    c.approval.hidden = false;
    if (a.state === "pending") {
      setCallState(c, "awaiting_approval");
      if (!runFinished()) setRunStatus("awaiting_approval");
    }
    refreshApprovalsBadge();
  },
  approval_granted(e) {
    const scope = e.scope === "run" ? "for this run" : "once";
    closeApproval(e, "approved", withComment(`Approved ${scope} by ${e.by || "someone"}`, e.comment));
  },
  approval_denied(e) {
    closeApproval(e, "rejected", withComment(`Rejected by ${e.by || "someone"}`, e.comment), true);
  },
  approval_expired(e) {
    closeApproval(e, "expired", "Nobody answered in time: the call was denied.", true);
  },
  tool_call_dispatched(e) {
    const c = call(e.call_id, e.name);
    setArguments(c, e.arguments);
    setCallState(c, "dispatched");
  },
  tool_call_started(e) {
    setCallState(call(e.call_id, e.name), "running");
  },
  tool_call_completed(e) {
    const c = call(e.call_id, e.name);
    setCallState(c, e.is_error ? "error" : "completed");
    const parts = [];
    if (e.exit_code != null) parts.push(`exit ${e.exit_code}`);
    if (e.duration_ms != null) parts.push(seconds(e.duration_ms));
    c.meta.textContent = parts.join(" · ");
    const about = e.is_error ? ["the tool reported an error"] : [];
    if (e.truncated) about.push(`cut${e.full_output_path ? `: all of it in ${e.full_output_path}` : ""}`);
    c.summary.textContent = about.length ? `Output (${about.join("; ")})` : "Output";
    showMarkdown(c.outputBody, e.output || "");
    c.output.hidden = false;
    c.output.open = (e.output || "").length <= OPEN_OUTPUT_CHARS;
    c.output.classList.toggle("is-error", Boolean(e.is_error));
  },
  tool_call_failed(e) {
    const c = call(e.call_id, e.name);
    setCallState(c, "failed");
    if (e.duration_ms) c.meta.textContent = seconds(e.duration_ms);
    show(c.error, `${String(e.error_code).replaceAll("_", " ")}${e.message ? `: ${e.message}` : ""}`);
  },
  agent_run_completed(e) {
    setRunStatus("completed");
    $("agent-answer-title").textContent = "Answer";
    showMarkdown($("agent-answer"), e.answer || "");
    $("agent-answer-box").hidden = false;
    const info = [e.iterations != null ? `${e.iterations} turns` : "",
                  e.tool_calls != null ? `${e.tool_calls} tool calls` : ""].filter(Boolean).join(", ");
    if (info && !$("agent-run-info").textContent.includes(info)) $("agent-run-info").textContent += ` · ${info}`;
    finishRun();
  },
  agent_run_failed(e) {
    setRunStatus("failed");
    show($("agent-run-error"), `Stopped (${statusLabel(e.reason)})${e.message ? `: ${e.message}` : ""}`);
    if (e.partial) {
      $("agent-answer-title").textContent = "What the model had written";
      showMarkdown($("agent-answer"), e.partial);
      $("agent-answer-box").hidden = false;
    }
    finishRun();
  },
  agent_run_cancelled(e) {
    setRunStatus("cancelled");
    const why = e.reason && e.reason !== "user" ? ` (${statusLabel(e.reason)})` : "";
    show($("agent-run-error"), `Cancelled${e.by ? ` by ${e.by}` : ""}${why}.`);
    finishRun();
  },
  thread_completed() {
    // The thread's end: the stream ends with it (an agent event said how the run ended, or will from the snapshot).
    if (!runFinished()) setRunStatus("completed");
    finishRun();
  },
  thread_failed(e) {
    if (!runFinished()) {
      setRunStatus("failed");
      show($("agent-run-error"), e.message || "The run failed.");
    }
    finishRun();
  },
};
