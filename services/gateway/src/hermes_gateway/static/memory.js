// Hermes web UI, the project memory page (#memory): what the historian kept from ended threads, per project
// (GET /api/memory/entries; "history" also shows superseded, expired and deleted entries), each editable (PUT
// /api/memory/entries/<id>) and deletable (DELETE); "Consolidate now" runs the historian (POST
// /api/memory/consolidate). Entry texts come from conversations: shown as text only.
"use strict";

PAGES.push({
  matches: (hash) => hash === "#memory",
  enter() {
    $("memory-view").hidden = false;
    loadMemory();
    $("memory-title").focus();
  },
  leave() {
    $("memory-view").hidden = true;
  },
});

async function loadMemory() {
  try {
    const history = $("memory-history").checked ? "true" : "false";
    const data = await api(`/api/memory/entries?history=${history}`);
    show($("memory-error"), "");
    renderMemory(data.entries);
  } catch (error) {
    show($("memory-error"), describe(error));
  }
}

function renderMemory(entries) {
  const items = entries.map((e) => {
    const item = document.createElement("li");
    item.dataset.entryId = e.entry_id;
    const head = document.createElement("div");
    head.className = "step-head";
    head.append(text("span", `${e.project} · ${e.kind}`, "pill"), text("span", e.status, "muted small"),
      text("span", `relevance ${e.relevance.toFixed(2)}`, "muted small"));
    const body = text("p", e.text);
    item.append(head, body);
    if (e.status === "live") item.append(memoryActions(e, body));
    return item;
  });
  $("memory-entries").replaceChildren(...(items.length ? items : [text("li", "Nothing kept yet.", "muted")]));
}

function memoryActions(e, body) {
  const box = document.createElement("div");
  box.className = "write";
  const edit = text("button", "Edit", "secondary");
  edit.type = "button";
  edit.addEventListener("click", async () => {
    const changed = window.prompt("New text of this memory entry", e.text);
    if (changed === null || !changed.trim()) return;
    try {
      await api(`/api/memory/entries/${encodeURIComponent(e.entry_id)}`,
        { method: "PUT", body: JSON.stringify({ text: changed, kind: e.kind, expires_at: e.expires_at }) });
      body.textContent = changed;
      show($("memory-note"), "Entry updated.");
    } catch (error) {
      show($("memory-error"), describe(error));
    }
  });
  const remove = text("button", "Delete", "danger");
  remove.type = "button";
  remove.addEventListener("click", async () => {
    try {
      await api(`/api/memory/entries/${encodeURIComponent(e.entry_id)}`, { method: "DELETE" });
      show($("memory-note"), "Entry deleted: it no longer reaches prompts.");
      setTimeout(loadMemory, 500);
    } catch (error) {
      show($("memory-error"), describe(error));
    }
  });
  box.append(edit, remove);
  return box;
}

document.addEventListener("DOMContentLoaded", () => {
  $("memory-history").addEventListener("change", loadMemory);
  $("memory-consolidate").addEventListener("click", async () => {
    try {
      await api("/api/memory/consolidate", { method: "POST", body: "{}" });
      show($("memory-note"), "The historian is reading your ended threads.");
      setTimeout(loadMemory, 2000);
    } catch (error) {
      show($("memory-error"), describe(error));
    }
  });
});
