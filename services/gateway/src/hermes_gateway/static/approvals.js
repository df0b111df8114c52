// Hermes web UI, the approvals page (#approvals): the tool calls of the user's agent runs that wait for a person
// (GET /api/approvals?status=pending, asked again every APPROVALS_POLL_MS while the page is open), each approved
// once, for its run, or rejected, with an optional comment; how many wait, on the nav entry (asked every
// APPROVALS_BADGE_MS on any page). approvalActions is also the agent page's (agent.js) way to answer one.
// Arguments and reasons are shown as text only (they come from a model).
"use strict";

const APPROVALS_POLL_MS = 3000;
const APPROVALS_BADGE_MS = 15000;
const APPROVAL_ERRORS = {
  approval_closed: "Too late: this approval is closed already (decided, or expired).",
  not_found: "There is no such approval (any more).",
};
const APPROVAL_DONE = { once: "Approved once", run: "Approved for this run", reject: "Rejected" };

let approvalsTimer = null;

PAGES.push({
  matches: (hash) => hash === "#approvals",
  enter() {
    $("approvals-view").hidden = false;
    clearInterval(approvalsTimer);
    loadApprovals();
    approvalsTimer = setInterval(loadApprovals, APPROVALS_POLL_MS);
    $("approvals-title").focus();
  },
  leave() {
    $("approvals-view").hidden = true;
    clearInterval(approvalsTimer);
    approvalsTimer = null;
  },
});

async function loadApprovals() {
  try {
    const data = await api("/api/approvals?status=pending");
    show($("approvals-error"), "");
    renderApprovals(data.approvals.filter((a) => (a.status || "pending") === "pending"));
    $("approvals-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    show($("approvals-error"), describe(error));
  }
}

function renderApprovals(pending) {
  // Updated in place, never re-rendered: a comment being typed into one stays.
  const list = $("approvals");
  const shown = new Map([...list.querySelectorAll("li[data-approval-id]")].map((li) => [li.dataset.approvalId, li]));
  for (const a of pending) {
    if (!shown.has(a.approval_id)) list.append(approvalItem(a));
    shown.delete(a.approval_id);
  }
  for (const gone of shown.values()) gone.remove(); // answered (here or elsewhere) or expired
  for (const placeholder of list.querySelectorAll("li:not([data-approval-id])")) placeholder.remove(); // loading…
  if (!pending.length) list.replaceChildren(text("li", "Nothing waits for your approval.", "muted empty"));
  showApprovalsBadge(pending.length);
}

function approvalItem(a) {
  const item = document.createElement("li");
  item.className = "approval-item";
  item.dataset.approvalId = a.approval_id;
  const head = document.createElement("div");
  head.className = "step-head";
  const runLink = document.createElement("a");
  runLink.href = `#agent/${a.run_id}`;
  runLink.textContent = `run ${a.run_id}`;
  head.append(text("code", a.tool || a.name || "tool", "tool-name"), runLink, text("span", "", "spacer"));
  if (a.expires_at) head.append(text("span", `expires ${clock(a.expires_at)}`, "muted small"));
  item.append(head);
  if (a.reason) item.append(text("p", a.reason, "small approval-reason"));
  item.append(jsonBlock(a.arguments), approvalActions(a.approval_id, (decision) => {
    setNote($("approvals-note"), `${APPROVAL_DONE[decision]}: ${a.tool || a.name} of run ${a.run_id}.`);
    item.remove();
    loadApprovals();
  }));
  if (a.requested_at) item.append(text("p", `asked ${clock(a.requested_at)}`, "muted small"));
  return item;
}

function approvalActions(approvalId, onDecided) {
  // Approve once / Approve for this run / Reject, with an optional comment; onDecided(decision) after a 202.
  const box = document.createElement("form");
  box.className = "approval-actions write";
  box.dataset.approvalId = approvalId;
  const comment = document.createElement("input");
  comment.type = "text";
  comment.id = `approval-comment-${approvalId}`;
  comment.className = "approval-comment";
  comment.maxLength = 2000;
  comment.placeholder = "comment (optional; the model is told)";
  const label = text("label", "Comment", "visually-hidden");
  label.htmlFor = comment.id;
  const note = statusNote();
  const choices = [["once", "Approve once", ""], ["run", "Approve for this run", "secondary"],
                   ["reject", "Reject", "danger"]];
  const buttons = choices.map(([decision, caption, className]) => {
      const button = text("button", caption, className);
      button.type = "button";
      button.dataset.decision = decision;
      button.addEventListener("click", async () => {
        for (const b of buttons) b.disabled = true;
        setNote(note, "");
        try {
          await decideApproval(approvalId, decision, comment.value.trim());
          setNote(note, `${APPROVAL_DONE[decision]}.`);
          comment.disabled = true;
          if (onDecided) onDecided(decision);
        } catch (error) {
          setNote(note, APPROVAL_ERRORS[error.code] || describe(error), true);
          const closed = error.code === "approval_closed" || error.code === "not_found";
          if (!closed) for (const b of buttons) b.disabled = false;
        }
      });
      return button;
    });
  box.addEventListener("submit", (e) => e.preventDefault()); // Enter in the comment decides nothing
  const row = document.createElement("div");
  row.className = "row wrap";
  row.append(label, comment, ...buttons);
  box.append(row, note);
  return box;
}

function decideApproval(approvalId, decision, comment) {
  const base = `/api/approvals/${encodeURIComponent(approvalId)}`;
  if (decision === "reject") {
    return api(`${base}/reject`, { method: "POST", body: JSON.stringify({ comment }) });
  }
  return api(`${base}/approve`, { method: "POST", body: JSON.stringify({ scope: decision, comment }) });
}

function showApprovalsBadge(count) {
  const badge = $("approvals-badge");
  badge.textContent = count ? String(count) : "";
  badge.hidden = !count;
  badge.setAttribute("aria-label", `${count} waiting`);
}

async function refreshApprovalsBadge() {
  if (!$("login-view").hidden) return;
  try {
    const data = await api("/api/approvals?status=pending");
    showApprovalsBadge(data.approvals.filter((a) => (a.status || "pending") === "pending").length);
  } catch { /* optional: the page itself says what failed */ }
}

// ---------------------------------------------------------------- helpers shared with agent.js

function jsonBlock(value) {
  // Arguments as indented JSON, as text (never HTML).
  let shown;
  try { shown = JSON.stringify(value ?? {}, null, 2); } catch { shown = String(value); }
  return text("pre", shown, "json");
}

function clock(value) {
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleTimeString();
}

document.addEventListener("DOMContentLoaded", refreshApprovalsBadge);
setInterval(refreshApprovalsBadge, APPROVALS_BADGE_MS);
