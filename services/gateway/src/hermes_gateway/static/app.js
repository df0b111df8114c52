// Hermes web UI: submit an idea, watch the thread live over SSE, answer the questions, read draft 2 beside
// draft 1 with a word diff, rate it, download it (Markdown, JSON); see and correct what Hermes assumed from
// learned preferences, and edit or forget them (#preferences); backends, queue and spend (#system); log in when
// the gateway asks (401). Everything shown about a thread comes from its events (GET /api/threads/<id>/events);
// no build step. The word diff is jsdiff (static/vendor/diff.min.js, version in its first line); drafts are shown
// as sanitised Markdown (showMarkdown, static/markdown.js). Pages of their own files (static/agent.js,
// static/approvals.js) register in PAGES and are routed here; they use this file's helpers (api, text, show...).
"use strict";

const $ = (id) => document.getElementById(id);
const DRAFT_OF_KIND = { draft1: 1, draft2: 2 };
const STATUS_LABEL = {
  accepted: "accepted", drafting: "drafting", awaiting_answers: "awaiting answers", refining: "refining",
  completed: "completed", failed: "failed",
};

const PREFERENCE_VALUES = { // the values the learner knows for these keys; a constraint's value is free text
  depth: ["overview", "detailed", "comprehensive"], style: ["formal", "casual", "technical"],
};
const PREFERENCE_SOURCES = { explicit: "you said so", observed: "your answers", inferred: "your ratings" };

const RECONNECT_MS = 2000; // a closed stream (not one EventSource retries itself) is reopened after this

// on screen: { id, userId, source, jobs: Map, finalDrafts: Set, draftText: {number: text}, assumptions: Map, lastSeq }
let thread = null;
let me = { user_id: "local", mode: "user", auth_enabled: false }; // GET /api/auth/me; 404: auth disabled
let recentThreads = []; // the last GET /api/threads, filtered on screen by the search box

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(error, status) {
    super(error.message || `HTTP ${status}`);
    this.code = error.code;
    this.userAction = error.user_action;
    this.status = status;
  }
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { "Content-Type": "application/json", Accept: "application/json" },
  });
  if (response.status === 401) showLogin();
  let body = null;
  try { body = await response.json(); } catch { /* not JSON: handled below */ }
  if (!body || body.status !== "success") {
    throw new ApiError(body && body.error ? body.error : { code: "http_error" }, response.status);
  }
  return body.data;
}

function describe(error) {
  return error.userAction ? `${error.message} ${error.userAction}` : error.message;
}

function show(element, text) {
  element.textContent = text || "";
  element.hidden = !text;
}

// ---------------------------------------------------------------- submitting

$("idea-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  show($("form-error"), "");
  const idea = $("idea").value;
  if (!idea.trim()) { show($("form-error"), "Describe your idea in a few words."); return; }
  const maxQuestions = parseInt($("max-questions").value, 10);
  $("submit").disabled = true;
  try {
    const data = await api("/api/submit", {
      method: "POST",
      body: JSON.stringify({ idea, channel: "web", max_questions: Number.isNaN(maxQuestions) ? null : maxQuestions }),
    });
    location.hash = `thread=${data.thread_id}`; // hashchange opens it
    loadRecent();
  } catch (error) {
    show($("form-error"), describe(error));
  } finally {
    $("submit").disabled = false;
  }
});

// ---------------------------------------------------------------- rating (teaches the learner)

for (const button of $("rate-box").querySelectorAll("button[data-rating]")) {
  button.addEventListener("click", async () => {
    const rating = Number(button.dataset.rating);
    try {
      await api(`/api/threads/${encodeURIComponent(thread.id)}/rate`, {
        method: "POST", body: JSON.stringify({ rating }),
      });
      $("rate-note").textContent = `rated ${rating}/5, thank you`;
    } catch (error) {
      $("rate-note").textContent = describe(error);
    }
  });
}

// ---------------------------------------------------------------- one thread, live

function openThread(threadId) {
  if (thread && thread.source) thread.source.close();
  thread = {
    id: threadId, userId: "local", source: null, jobs: new Map(), finalDrafts: new Set(), draftText: {},
    assumptions: new Map(), lastSeq: 0,
  };
  $("thread").hidden = false;
  $("thread-id").textContent = threadId;
  $("thread-idea").textContent = "…";
  show($("thread-error"), "");
  show($("answers-error"), "");
  $("draft1").replaceChildren(muted("waiting for the first words…"));
  $("draft1-meta").textContent = "";
  $("draft2").replaceChildren();
  $("draft2-meta").textContent = "";
  $("draft2-box").hidden = true;
  $("diff").replaceChildren();
  $("diff-box").hidden = true;
  const base = `/api/threads/${encodeURIComponent(threadId)}/result`;
  $("download-md").href = `${base}?format=md`;
  $("download-json").href = `${base}?format=json`;
  $("questions").replaceChildren();
  $("questions-form").hidden = true;
  $("answer-deadline").textContent = "";
  $("rate-box").hidden = true;
  $("rate-note").textContent = "";
  clearAssumptions();
  renderJobs();
  setStatus("drafting");

  listen(thread);
}

function listen(current) {
  // EventSource reconnects by itself after a dropped connection and sends Last-Event-ID, so the gateway resumes
  // after the last log event seen. A stream the browser gave up on (CLOSED: e.g. an error status) is reopened
  // from the start; either way an event whose id was already applied is skipped, and tokens are deduplicated
  // per job by their seq, so no draft text is shown twice.
  const source = new EventSource(`/api/threads/${encodeURIComponent(current.id)}/events`);
  current.source = source;
  for (const [type, handler] of Object.entries(HANDLERS)) {
    source.addEventListener(type, (message) => {
      if (thread !== current) return;
      // A token has no id of its own: an EventSource keeps the last log event's id on it, so only log events
      // are checked against (and move) the position.
      if (type !== "token" && message.lastEventId) {
        const seq = Number(message.lastEventId);
        if (seq <= current.lastSeq) return; // replayed after a reconnect: already on screen
        current.lastSeq = seq;
      }
      let data;
      try { data = JSON.parse(message.data); } catch { return; }
      handler(data);
    });
  }
  source.onopen = () => { if (thread === current) setConnection("live"); };
  source.onerror = () => {
    if (thread !== current || isFinished()) return;
    setConnection("reconnecting");
    if (source.readyState === EventSource.CLOSED) {
      setTimeout(async () => {
        if (thread !== current || isFinished() || current.source !== source) return;
        if (await signedOut()) return;
        listen(current);
      }, RECONNECT_MS);
    }
  };
}

function setConnection(state) {
  const label = { live: "· live", reconnecting: "· reconnecting…", closed: "" }[state];
  $("connection").textContent = label;
  $("connection").dataset.state = state;
}

function isFinished() {
  return ["completed", "failed"].includes($("thread-status").dataset.status);
}

function finish() {
  if (thread && thread.source) thread.source.close();
  setConnection("closed");
  loadJobCosts();
  $("rate-box").hidden = $("thread-status").dataset.status !== "completed";
  for (const input of $("questions-form").querySelectorAll("input, button")) input.disabled = true;
  loadRecent();
}

function setStatus(status, detail) {
  const badge = $("thread-status");
  badge.dataset.status = status;
  badge.textContent = (STATUS_LABEL[status] || status) + (detail ? ` · ${detail.replaceAll("_", " ")}` : "");
  if (recentThreads.some((t) => t.thread_id === thread.id && t.status !== status)) renderRecent();
}

function job(jobId) {
  if (!thread.jobs.has(jobId)) thread.jobs.set(jobId, { id: jobId, kind: null, status: "queued", text: "", nextSeq: 0 });
  return thread.jobs.get(jobId);
}

function draftNumberOf(j) {
  return DRAFT_OF_KIND[j.kind] || null;
}

function showDraft(number, text, { streaming = false } = {}) {
  // Rendered as Markdown (sanitised); the diff compares the drafts' own words (thread.draftText).
  const box = $(`draft${number}`);
  thread.draftText[number] = text;
  showMarkdown(box, text);
  box.classList.toggle("streaming", streaming);
  if (number === 2) $("draft2-box").hidden = false;
}

function showJobMeta(j) {
  const number = draftNumberOf(j);
  if (!number) return;
  const parts = [];
  if (j.backend) parts.push(`${j.backend} · ${j.model}`);
  if (j.tokens) parts.push(`${j.tokens} tokens`);
  if (j.costCents != null) parts.push(cents(j.costCents));
  if (j.latencyMs != null) parts.push(seconds(j.latencyMs));
  $(`draft${number}-meta`).textContent = parts.join(" · ");
}

const HANDLERS = {
  thread_opened(e) {
    $("thread-idea").textContent = e.idea;
    if (e.user_id) thread.userId = e.user_id;
    addAssumptions(e.assumptions); // what draft 1 applied
    setStatus("drafting");
  },
  job_queued(e) {
    const j = job(e.job_id);
    j.kind = e.kind;
    if (e.kind === "draft2") setStatus("refining");
    if (j.text && draftNumberOf(j)) showDraft(draftNumberOf(j), j.text, { streaming: true });
    renderJobs();
  },
  backend_selected(e) {
    Object.assign(job(e.job_id), { backend: e.backend, model: e.model, reason: e.reason, status: "dispatched" });
    renderJobs();
  },
  execution_started(e) {
    Object.assign(job(e.job_id), { backend: e.backend, model: e.model, status: "running" });
    renderJobs();
  },
  token(e) {
    const j = job(e.job_id);
    if (e.seq < j.nextSeq) return; // already shown
    // Tokens are live only: those sent while no stream was open are marked missing until the whole draft comes.
    if (e.seq > j.nextSeq) j.text += /^\s/.test(e.text) ? "…" : "… ";
    j.text += e.text;
    j.nextSeq = e.seq + 1;
    const number = draftNumberOf(j);
    if (number && !thread.finalDrafts.has(number)) showDraft(number, j.text, { streaming: !e.done });
  },
  execution_completed(e) {
    Object.assign(job(e.job_id), {
      backend: e.backend, model: e.model, status: "completed",
      tokens: e.prompt_tokens + e.completion_tokens, latencyMs: e.latency_ms,
    });
    renderJobs();
  },
  cost_recorded(e) {
    job(e.job_id).costCents = e.cost_cents;
    renderJobs();
  },
  execution_failed(e) {
    Object.assign(job(e.job_id), { status: e.retryable ? "retrying" : "failed", error: e.message });
    renderJobs();
  },
  draft_presented(e) {
    const j = job(e.job_id);
    thread.finalDrafts.add(e.draft_number);
    showDraft(e.draft_number, e.text);
    if (!j.backend) Object.assign(j, { backend: e.backend, model: e.model });
    if (!j.tokens && (e.prompt_tokens || e.completion_tokens)) j.tokens = e.prompt_tokens + e.completion_tokens;
    if (j.latencyMs == null && e.latency_ms) j.latencyMs = e.latency_ms;
    showJobMeta(j);
    renderJobs();
    renderDiff();
  },
  questions_proposed(e) {
    addAssumptions(e.assumptions); // what was not asked because a learned preference answers it
    renderQuestions(e.questions);
    if (e.questions.length) {
      setStatus("awaiting_answers");
      loadDeadline();
    }
  },
  answers_recorded(e) {
    for (const answer of e.answers) {
      const input = document.querySelector(`input[data-question-id="${CSS.escape(answer.question_id)}"]`);
      if (input) input.value = answer.text;
    }
    for (const input of $("questions-form").querySelectorAll("input, button")) input.disabled = true;
    $("answer-deadline").textContent = "answers sent";
    setStatus("refining");
  },
  thread_rated(e) {
    $("rate-note").textContent = `rated ${e.rating}/5`;
  },
  thread_completed(e) {
    setStatus("completed", e.reason);
    if (e.reason === "answer_timeout") $("answer-deadline").textContent = "no answers in time: draft 1 is final";
    finish();
  },
  job_failed(e) {
    Object.assign(job(e.job_id), { status: "failed", error: e.message });
    renderJobs();
    show($("thread-error"), `A job failed: ${e.message}`);
  },
  thread_failed(e) {
    setStatus("failed", e.error_code);
    show($("thread-error"), e.message);
    finish();
  },
};

async function loadDeadline() {
  // The answer deadline lives in the read model; wait until it has applied what we have seen.
  const id = thread.id;
  try {
    const view = await threadView();
    if (thread.id === id && view.answer_deadline && view.answerable) {
      $("answer-deadline").textContent = `answer by ${new Date(view.answer_deadline).toLocaleTimeString()}`;
    }
  } catch { /* optional detail */ }
}

function threadView() {
  // The read model once it has applied what we have seen on the stream.
  return api(`/api/threads/${encodeURIComponent(thread.id)}/status?min_sequence=${thread.lastSeq}`);
}

async function loadJobCosts(tries = 5) {
  // Costs and tokens as recorded in the read model: the router records a job's cost after its result, so the
  // last one may come after the thread's end (and the end of its stream): asked again a few times until then.
  const current = thread;
  try {
    const view = await threadView();
    if (thread !== current) return;
    let missing = false;
    for (const v of view.jobs) {
      const j = job(v.job_id);
      Object.assign(j, { kind: j.kind || v.kind, backend: j.backend || v.backend, model: j.model || v.model });
      if (v.cost_cents || j.costCents == null) j.costCents = v.cost_cents;
      if (!j.tokens && (v.prompt_tokens || v.completion_tokens)) j.tokens = v.prompt_tokens + v.completion_tokens;
      if (j.latencyMs == null && v.latency_ms != null) j.latencyMs = v.latency_ms;
      missing ||= v.status === "completed" && !j.costCents;
    }
    renderJobs();
    if (missing && tries > 1) setTimeout(() => { if (thread === current) loadJobCosts(tries - 1); }, 1000);
  } catch { /* optional detail */ }
}

// ---------------------------------------------------------------- draft 1 → draft 2, word by word

function renderDiff() {
  if (!thread.finalDrafts.has(1) || !thread.finalDrafts.has(2)) return;
  const parts = window.Diff ? window.Diff.diffWords(thread.draftText[1] || "", thread.draftText[2] || "") : [];
  $("diff").replaceChildren(...parts.map((p) => {
    if (p.added) return text("ins", p.value);
    if (p.removed) return text("del", p.value);
    return document.createTextNode(p.value);
  }));
  if (!window.Diff) $("diff").replaceChildren(muted("the diff library did not load"));
  $("diff-box").hidden = false;
}

// ---------------------------------------------------------------- questions and answers

function renderQuestions(questions) {
  const list = $("questions");
  list.replaceChildren();
  for (const q of questions) {
    const item = document.createElement("li");
    item.className = "question";
    const head = document.createElement("div");
    head.className = "question-head";
    head.append(chip(q.category, `category category-${q.category}`), text("span", q.text, "question-text"));
    const input = document.createElement("input");
    input.type = "text";
    input.dataset.questionId = q.question_id;
    input.placeholder = "your answer (optional)";
    input.maxLength = 10000;
    item.append(head);
    const suggestions = document.createElement("div");
    suggestions.className = "suggestions";
    suggestions.dataset.category = q.category;
    for (const s of q.suggestions || []) suggestions.append(fillChip(s, "suggestion", s, input));
    item.append(suggestions, input);
    list.append(item);
  }
  $("questions-form").hidden = questions.length === 0;
  $("refine").disabled = false;
  addAssumptionChips([...thread.assumptions.values()]);
  loadPreferenceChips();
}

function fillChip(label, className, value, input) {
  const button = chip(label, className, "button");
  button.type = "button";
  button.addEventListener("click", () => { input.value = value; input.focus(); });
  return button;
}

function addAssumptionChips(assumptions) {
  // "use assumption": what Hermes assumed for this thread, or learned about the user, fills the answer of a
  // question of the same category in one click.
  for (const box of $("questions").querySelectorAll(".suggestions")) {
    const input = box.parentElement.querySelector("input[data-question-id]");
    for (const a of assumptions) {
      const value = String(a.value);
      if (a.category !== box.dataset.category || [...box.children].some((c) => c.dataset.value === value)) continue;
      const button = fillChip(`use assumption: ${value}`, "assumption-chip", value, input);
      button.dataset.value = value;
      button.title = `${preferenceLabel(a)}, ${percent(a.confidence)} sure`;
      box.append(button);
    }
  }
}

async function loadPreferenceChips() {
  const current = thread;
  try {
    const data = await api(`/api/learn/preferences?user_id=${encodeURIComponent(current.userId)}`);
    if (thread === current) addAssumptionChips(data.preferences);
  } catch { /* optional: the chips of this thread's own assumptions are there */ }
}

$("questions-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  show($("answers-error"), "");
  const answers = [...$("questions").querySelectorAll("input[data-question-id]")]
    .map((input) => ({ question_id: input.dataset.questionId, text: input.value.trim() }))
    .filter((a) => a.text);
  if (!answers.length) { show($("answers-error"), "Answer at least one question."); return; }
  $("refine").disabled = true;
  try {
    await api(`/api/threads/${encodeURIComponent(thread.id)}/continue`, {
      method: "POST", body: JSON.stringify({ answers }),
    });
    $("answer-deadline").textContent = "answers sent";
  } catch (error) {
    show($("answers-error"), describe(error));
    $("refine").disabled = false;
  }
});

// ---------------------------------------------------------------- assumptions (learned preferences) and corrections

function addAssumptions(assumptions) {
  // Appended, never re-rendered: a correction being typed into an earlier one stays.
  for (const a of assumptions || []) {
    const key = a.preference_id || a.pattern_id || `${a.category}/${a.key}`;
    if (thread.assumptions.has(key)) continue;
    thread.assumptions.set(key, a);
    $("assumptions").append(assumptionItem(a));
  }
  $("assumptions-box").hidden = thread.assumptions.size === 0;
  addAssumptionChips(assumptions || []);
}

function clearAssumptions() {
  $("assumptions").replaceChildren();
  $("assumptions-box").hidden = true;
}

function assumptionItem(a) {
  const item = document.createElement("li");
  item.className = "assumption";
  const head = document.createElement("div");
  head.className = "assumption-head";
  const fromPattern = (a.source || "preference") !== "preference";
  const label = fromPattern ? `${preferenceLabel(a)} (your usual answer)` : preferenceLabel(a);
  head.append(text("span", `${label}:`, "assumption-label"), text("span", a.value, "assumption-value"),
              chip(`${percent(a.confidence)} sure`, "confidence"));
  item.append(head);
  if (fromPattern || !a.preference_id) return item; // only a learned preference is corrected through feedback
  const toggle = text("button", "Correct", "secondary write");
  toggle.type = "button";
  toggle.setAttribute("aria-expanded", "false");
  toggle.setAttribute("aria-label", `Correct ${label}`);
  head.append(toggle);
  const note = statusNote();
  const form = correctionForm(a, note);
  form.hidden = true;
  toggle.addEventListener("click", () => {
    form.hidden = !form.hidden;
    toggle.setAttribute("aria-expanded", String(!form.hidden));
    if (!form.hidden) form.querySelector("input").focus();
  });
  item.append(form, note);
  return item;
}

function correctionForm(a, note) {
  const form = document.createElement("form");
  form.className = "row correction";
  const [input, values] = valueField(`correct-${a.preference_id}`, a.key, "");
  input.placeholder = PREFERENCE_VALUES[a.key] ? PREFERENCE_VALUES[a.key].join(", ") : "the right value";
  const label = text("label", `Right ${preferenceLabel(a).toLowerCase()}`, "inline");
  label.htmlFor = input.id;
  const send = text("button", "Send correction");
  send.type = "submit";
  form.append(label, input, values, send);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const value = input.value.trim();
    if (!value) { setNote(note, "Type the right value first.", true); return; }
    send.disabled = true;
    setNote(note, "");
    try {
      const data = await api("/api/learn/feedback", {
        method: "POST",
        body: JSON.stringify({
          thread_id: thread.id, user_id: thread.userId,
          corrections: [{ category: a.category, key: a.key, value }],
        }),
      });
      setNote(note, correctionOutcome(data.preferences[0], value));
      form.hidden = true;
    } catch (error) {
      setNote(note, describe(error), true);
    } finally {
      send.disabled = false;
    }
  });
  return form;
}

function correctionOutcome(pref, wanted) {
  // The learner weighs a correction against what it learned: it can lower a value without replacing it yet.
  const took = normalised(pref.value) === normalised(wanted);
  const head = took ? `Corrected: ${preferenceLabel(pref)} is now "${pref.value}"`
    : `Noted: ${preferenceLabel(pref)} stays "${pref.value}" for now`;
  const tail = pref.applied ? `${percent(pref.confidence)} sure, so Hermes assumes it from your next idea.`
    : `${percent(pref.confidence)} sure, too low to assume, so Hermes asks about it again.`;
  return `${head}; ${tail}${took ? "" : " Correct it again to change it."}`;
}

// ---------------------------------------------------------------- preferences page (#preferences)

async function loadPreferences() {
  const body = $("preferences");
  show($("preferences-error"), "");
  try {
    const data = await api("/api/learn/preferences?user_id=local");
    $("preferences-threshold").textContent = percent(data.confidence_threshold);
    body.replaceChildren(...data.preferences.map((p) => preferenceRow(p)));
    if (!data.preferences.length) {
      body.replaceChildren(emptyRow("Nothing learned yet: answer a few questions and Hermes picks up how you like "
                                    + "things.", 5));
    }
  } catch (error) {
    body.replaceChildren(emptyRow("unavailable", 5));
    show($("preferences-error"), describe(error));
  }
}

function preferenceRow(p, message = "") {
  const row = document.createElement("tr");
  const name = text("th", preferenceLabel(p));
  name.scope = "row";

  const form = document.createElement("form");
  form.className = "row edit";
  const [input, values] = valueField(`pref-${p.preference_id}`, p.key, p.value);
  const label = text("label", `${preferenceLabel(p)} value`, "visually-hidden");
  label.htmlFor = input.id;
  const save = text("button", "Save", "secondary write");
  save.type = "submit";
  const note = statusNote();
  form.append(label, input, values, save);
  const valueCell = document.createElement("td");
  valueCell.append(form, note);
  if (message) setNote(note, message);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const value = input.value.trim();
    if (!value) { setNote(note, "Type a value, or forget the preference.", true); return; }
    save.disabled = true;
    try {
      const updated = await api(`/api/learn/preferences/${encodeURIComponent(p.preference_id)}`, {
        method: "PATCH", body: JSON.stringify({ value }),
      });
      const fresh = preferenceRow(updated, "Saved.");
      row.replaceWith(fresh);
      fresh.querySelector("input").focus();
    } catch (error) {
      setNote(note, describe(error), true);
      save.disabled = false;
    }
  });

  const forget = text("button", "Forget", "danger write");
  forget.type = "button";
  forget.setAttribute("aria-label", `Forget ${preferenceLabel(p)}`);
  forget.addEventListener("click", async () => {
    if (!window.confirm(`Forget ${preferenceLabel(p)}: ${p.value}? Hermes stops assuming it.`)) return;
    forget.disabled = true;
    try {
      await api(`/api/learn/preferences/${encodeURIComponent(p.preference_id)}`, { method: "DELETE" });
      row.remove();
      if (!$("preferences").children.length) loadPreferences();
      else $("preferences-title").focus();
    } catch (error) {
      setNote(note, describe(error), true);
      forget.disabled = false;
    }
  });
  const actions = document.createElement("td");
  actions.append(forget);

  const confidence = text("td", percent(p.confidence) + (p.applied ? " · assumed" : ""));
  row.append(name, valueCell, confidence, text("td", PREFERENCE_SOURCES[p.source] || p.source), actions);
  return row;
}

// ---------------------------------------------------------------- settings page (#settings)

async function loadSettings() {
  const body = $("settings");
  show($("settings-error"), "");
  try {
    const data = await api("/api/config");
    body.replaceChildren(...data.settings.map((s) => settingRow(s)));
  } catch (error) {
    body.replaceChildren(emptyRow("unavailable", 3));
    show($("settings-error"), describe(error));
  }
}

function settingRow(s, message = "") {
  // One editable setting: its description, a number field within its bounds (Save; Reset when changed).
  const row = document.createElement("tr");
  row.dataset.key = s.key;
  const name = text("th", s.description);
  name.scope = "row";
  name.append(text("div", `${s.key} · ${s.env}`, "muted small"));
  const form = document.createElement("form");
  form.className = "row edit";
  const input = document.createElement("input");
  input.type = "number";
  input.id = `setting-${s.key.replaceAll(".", "-")}`;
  input.min = s.minimum;
  input.max = s.maximum;
  input.step = Number.isInteger(s.default) && Number.isInteger(s.minimum) && !String(s.value).includes(".")
    ? "1" : "any";
  input.value = s.value;
  input.required = true;
  const label = text("label", `${s.key} value`, "visually-hidden");
  label.htmlFor = input.id;
  const save = text("button", "Save", "secondary write");
  save.type = "submit";
  const note = statusNote();
  form.append(label, input, text("span", s.unit ? ` ${s.unit}` : "", "muted small"), save);
  if (s.changed) {
    const reset = text("button", "Reset", "secondary write");
    reset.type = "button";
    reset.addEventListener("click", () => changeSetting(row, s, null, note));
    form.append(reset);
  }
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    changeSetting(row, s, Number(input.value), note);
  });
  const valueCell = document.createElement("td");
  valueCell.append(form, note);
  if (message) setNote(note, message);
  row.append(name, valueCell, text("td", `${s.default}${s.unit ? " " + s.unit : ""}`));
  return row;
}

async function changeSetting(row, s, value, note) {
  try {
    const updated = await api(`/api/config/${encodeURIComponent(s.key)}`, {
      method: "PATCH", body: JSON.stringify({ value }),
    });
    const fresh = settingRow(updated, value === null ? "Back to the deployment's value." : "Saved.");
    row.replaceWith(fresh);
    fresh.querySelector("input").focus();
  } catch (error) {
    setNote(note, describe(error), true);
  }
}

// ---------------------------------------------------------------- jobs table, recent threads, health

function renderJobs() {
  const jobs = [...thread.jobs.values()].filter((j) => j.kind);
  const rows = jobs.map((j) => {
    const row = document.createElement("tr");
    row.append(
      text("td", j.kind),
      text("td", j.backend || "–"),
      text("td", j.model || "–"),
      text("td", j.tokens != null ? String(j.tokens) : "–"),
      text("td", j.costCents != null ? cents(j.costCents) : "–"),
      text("td", j.latencyMs != null ? seconds(j.latencyMs) : "–"),
      text("td", j.status + (j.error ? `: ${j.error}` : ""), `job-${j.status}`),
    );
    if (j.reason) row.title = `why this backend: ${j.reason}`;
    return row;
  });
  if (!rows.length) {
    const empty = text("td", "none yet", "muted");
    empty.colSpan = 7;
    rows.push(document.createElement("tr"));
    rows[0].append(empty);
  }
  $("jobs").replaceChildren(...rows);
  jobs.forEach(showJobMeta);
}

async function loadRecent() {
  try {
    recentThreads = (await api("/api/threads?limit=100")).threads;
    renderRecent();
  } catch (error) {
    $("recent").replaceChildren(text("li", `unavailable (${error.code})`, "muted"));
  }
}

function renderRecent() {
  // Every word typed must appear in the idea or the status.
  const words = normalised($("thread-search").value).split(" ").filter(Boolean);
  // The open thread's status is the live one (its events), which the listed one may trail.
  const live = thread && $("thread-status").dataset.status;
  for (const t of recentThreads) if (live && t.thread_id === thread.id) t.status = live;
  const shown = recentThreads.filter((t) => {
    const haystack = normalised(`${t.idea} ${t.status} ${STATUS_LABEL[t.status] || ""}`);
    return words.every((w) => haystack.includes(w));
  });
  $("recent").replaceChildren(...shown.map((t) => {
    const link = document.createElement("a");
    link.href = `#thread=${t.thread_id}`;
    const badge = text("span", STATUS_LABEL[t.status] || t.status, "status recent-status");
    badge.dataset.status = t.status;
    link.append(text("span", t.idea, "recent-idea"), badge);
    const item = document.createElement("li");
    item.dataset.threadId = t.thread_id;
    item.append(link);
    return item;
  }));
  if (!shown.length) {
    $("recent").replaceChildren(text("li", recentThreads.length ? "no thread matches" : "none yet", "muted"));
  }
}

$("thread-search").addEventListener("input", renderRecent);

// ---------------------------------------------------------------- system page (#system)

async function loadSystem() {
  show($("system-error"), "");
  const [backends, queue] = await Promise.allSettled([api("/api/backends"), api("/api/system/queue")]);
  const problems = [backends, queue].filter((r) => r.status === "rejected").map((r) => describe(r.reason));
  show($("system-error"), problems.join(" "));
  if (queue.status === "fulfilled") {
    const q = queue.value;
    $("queue-depth").textContent = String(q.open_jobs);
    $("queue-detail").textContent = Object.entries(q.by_status).filter(([, n]) => n)
      .map(([status, n]) => `${n} ${status}`).join(" · ") || "no open jobs";
  }
  if (backends.status === "fulfilled") {
    const { budget } = backends.value;
    $("spend-today").textContent = budget.daily_budget_cents != null
      ? `${cents(budget.spent_today_cents)} of ${cents(budget.daily_budget_cents)}` : cents(budget.spent_today_cents);
    $("spend-detail").textContent = budget.daily_budget_cents != null
      ? `${percent(budget.spent_today_cents / budget.daily_budget_cents)} of the daily budget (${budget.day}, UTC)`
      : `no daily budget set (${budget.day}, UTC)`;
    $("spend-meter").hidden = budget.daily_budget_cents == null;
    $("spend-meter").max = budget.daily_budget_cents || 1;
    $("spend-meter").value = budget.spent_today_cents;
    $("backends").replaceChildren(...backends.value.backends.map(backendRow));
    if (!backends.value.backends.length) $("backends").replaceChildren(emptyRow("no backend registered", 8));
  }
  $("system-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

function backendRow(b) {
  const row = document.createElement("tr");
  row.dataset.backend = b.name;
  const name = text("th", `${b.name} (${b.type}${b.local ? ", local" : ""})`);
  name.scope = "row";
  const health = text("span", b.enabled ? b.health : `${b.health}, disabled`, "status backend-health");
  health.dataset.status = b.enabled ? b.health : "disabled";
  if (b.unhealthy_reason) health.title = b.unhealthy_reason;
  const healthCell = document.createElement("td");
  healthCell.append(health);
  row.append(
    name, healthCell, text("td", b.models.join(", ") || "–"),
    text("td", b.max_concurrent ? `${b.in_flight} / ${b.max_concurrent}` : String(b.in_flight)),
    text("td", `${b.requests} (${b.failures} failed)`), text("td", percent(b.success_rate)),
    text("td", b.mean_latency_ms != null ? seconds(b.mean_latency_ms) : "–"), text("td", cents(b.spend_today_cents)),
  );
  return row;
}

// ---------------------------------------------------------------- login (when the gateway asks for it)

function showLogin() {
  if (!$("login-view").hidden) return;
  for (const id of ["idea-form", "thread", "system-view", "preferences-view", "settings-view"]) $(id).hidden = true;
  for (const page of PAGES) page.leave();
  $("login-view").hidden = false;
  $("login-token").focus();
}

async function signedOut() {
  // Whether the gateway wants a login now (an EventSource does not say why it failed).
  try {
    return (await fetch("/api/auth/me", { headers: { Accept: "application/json" } })).status === 401;
  } catch {
    return false;
  }
}

$("login-view").addEventListener("submit", async (e) => {
  e.preventDefault();
  show($("login-error"), "");
  $("login-submit").disabled = true;
  try {
    await api("/api/auth/login", { method: "POST", body: JSON.stringify({ token: $("login-token").value }) });
    location.reload();
  } catch (error) {
    show($("login-error"), error.status === 401 ? "That token is not valid." : describe(error));
    $("login-view").hidden = false; // api() may have hidden nothing; keep the form up
  } finally {
    $("login-submit").disabled = false;
  }
});

$("logout").addEventListener("click", async () => {
  try { await api("/api/auth/logout", { method: "POST" }); } catch { /* signed out either way */ }
  location.reload();
});

async function loadMe() {
  // 404: the gateway has no auth (everyone is the local user); 401: api() shows the login form.
  try {
    me = await api("/api/auth/me");
  } catch (error) {
    if (error.status !== 404) return;
  }
  document.body.classList.toggle("guest", me.mode === "guest");
  show($("user"), me.auth_enabled ? `${me.user_id}${me.mode === "guest" ? " (guest: read only)" : ""}` : "");
  $("logout").hidden = !me.auth_enabled;
}

async function loadHealth() {
  const pill = $("health");
  try {
    const response = await fetch("/api/system/health");
    const body = await response.json();
    const report = body.status === "success" ? body.data : body.error.details;
    pill.textContent = report && report.status === "ok" ? "all systems ok" : "degraded";
    pill.className = `pill ${report && report.status === "ok" ? "ok" : "bad"}`;
    pill.title = body.status === "success" ? "NATS, streams and orchestrator answering" : body.error.message;
  } catch {
    pill.textContent = "gateway unreachable";
    pill.className = "pill bad";
  }
}

// ---------------------------------------------------------------- small DOM helpers

function text(tag, value, className) {
  const element = document.createElement(tag);
  element.textContent = value;
  if (className) element.className = className;
  return element;
}

function chip(value, className, tag = "span") {
  return text(tag, value, `chip ${className}`);
}

function muted(value) {
  return text("span", value, "muted");
}

function emptyRow(value, columns) {
  const cell = text("td", value, "muted");
  cell.colSpan = columns;
  const row = document.createElement("tr");
  row.append(cell);
  return row;
}

function valueField(id, key, value) {
  // A preference's value (1-120 characters) as [input, its datalist]: depth and style offer the known values.
  const input = document.createElement("input");
  input.type = "text";
  input.id = id;
  input.maxLength = 120;
  input.required = true;
  input.value = value;
  const list = document.createElement("datalist");
  list.id = `${id}-values`;
  for (const known of PREFERENCE_VALUES[key] || []) {
    const option = document.createElement("option");
    option.value = known;
    list.append(option);
  }
  if (list.children.length) input.setAttribute("list", list.id);
  return [input, list];
}

function statusNote() {
  // Always in the page (empty until used), so screen readers announce what is written into it.
  const note = text("p", "", "small note");
  note.setAttribute("role", "status");
  return note;
}

function setNote(note, value, isError = false) {
  note.textContent = value;
  note.classList.toggle("error", isError);
}

function preferenceLabel(p) {
  const name = p.key.replaceAll("_", " ");
  return name.charAt(0).toUpperCase() + name.slice(1);
}

function percent(fraction) {
  return `${Math.round(Math.min(Math.max(Number(fraction) || 0, 0), 1) * 100)}%`;
}

function normalised(value) {
  return value.split(/\s+/).filter(Boolean).join(" ").toLowerCase();
}

function cents(value) {
  const n = Number(value) || 0;
  return `${n >= 1 || n === 0 ? n.toFixed(2) : n.toPrecision(2)} ¢`;
}

function seconds(ms) {
  return ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}

// ---------------------------------------------------------------- routing: #thread=<id>, #preferences, #system, #settings

let systemTimer = null;

// The pages of other files: { matches(hash) -> bool, enter(hash) (shows it; called on every hash change to it),
// leave() (hides it, stops its timers and streams) }; agent.js (#agent, #agent/<run_id>), approvals.js (#approvals).
const PAGES = [];

function route() {
  if (!$("login-view").hidden) return;
  const onPreferences = location.hash === "#preferences";
  const onSystem = location.hash === "#system";
  const onSettings = location.hash === "#settings";
  const page = PAGES.find((p) => p.matches(location.hash));
  const away = onPreferences || onSystem || onSettings || Boolean(page);
  $("preferences-view").hidden = !onPreferences;
  $("system-view").hidden = !onSystem;
  $("settings-view").hidden = !onSettings;
  $("idea-form").hidden = away;
  $("thread").hidden = away || !thread;
  clearInterval(systemTimer);
  for (const other of PAGES) if (other !== page) other.leave();
  if (page) {
    page.enter(location.hash);
    return;
  }
  if (onSystem) {
    loadSystem();
    systemTimer = setInterval(loadSystem, 5000);
    $("system-title").focus();
    return;
  }
  if (onSettings) {
    loadSettings();
    $("settings-title").focus();
    return;
  }
  if (onPreferences) {
    loadPreferences();
    $("preferences-title").focus();
    return;
  }
  const match = location.hash.match(/^#thread=([A-Za-z0-9_-]+)$/);
  if (match && (!thread || thread.id !== match[1])) openThread(match[1]);
}

window.addEventListener("hashchange", route);
loadMe();
// After every deferred script (the pages of agent.js and approvals.js have registered by then).
document.addEventListener("DOMContentLoaded", route);
loadRecent();
loadHealth();
setInterval(() => { loadHealth(); loadRecent(); }, 15000);
