// Markdown for the web UI: drafts, agent answers and tool output are shown rendered, and none of them is ever
// trusted (a model or a tool wrote it). marked (static/vendor/marked.min.js) turns Markdown into HTML with every
// piece of raw HTML in the text escaped, so it shows as text; DOMPurify (static/vendor/purify.min.js) then keeps
// only an allow-list of tags and attributes (no script, style, iframe, form, image or event handler) and only
// http(s), mailto and relative URLs; every link opens in a new tab with rel="noopener noreferrer". Versions in the
// first line of each vendored file. Without the libraries the text is shown as plain text.
"use strict";

const MARKDOWN_TAGS = [
  "a", "b", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "kbd", "li",
  "ol", "p", "pre", "s", "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul",
];
const MARKDOWN_ATTRIBUTES = ["href", "title", "align", "start", "colspan", "rowspan"];
// A scheme-less (relative) URL, or http, https, mailto; any other scheme (script, data, vbscript...) is dropped.
const MARKDOWN_URL = /^(?:(?:https?|mailto):|[^a-z]|[^:]*$)/i;
const PURIFY_CONFIG = {
  ALLOWED_TAGS: MARKDOWN_TAGS, ALLOWED_ATTR: MARKDOWN_ATTRIBUTES, ALLOWED_URI_REGEXP: MARKDOWN_URL,
  ALLOW_DATA_ATTR: false, ALLOW_ARIA_ATTR: false, ALLOW_UNKNOWN_PROTOCOLS: false, KEEP_CONTENT: true,
};

function escapeHtml(value) {
  return String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const markdownParser = window.marked && window.marked.Marked ? new window.marked.Marked({
  gfm: true,
  breaks: true, // a model's (or a tool's) single line breaks are kept
  renderer: {
    html({ text }) { return escapeHtml(text); }, // raw HTML, block or inline, is shown as text
    image({ href, text }) { return `<a href="${escapeHtml(href)}">${escapeHtml(text || href)}</a>`; }, // no fetches
    checkbox({ checked }) { return checked ? "☑ " : "☐ "; }, // a task list item without a form control
  },
}) : null;

const purifier = window.DOMPurify ? window.DOMPurify(window) : null; // its own instance: the hook stays here
if (purifier && purifier.isSupported) {
  purifier.addHook("afterSanitizeAttributes", (node) => {
    if (node.tagName === "A" && node.hasAttribute("href")) {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer");
    }
  });
}

function markdownReady() {
  return Boolean(markdownParser && purifier && purifier.isSupported);
}

function renderMarkdown(text) {
  // Markdown → sanitised HTML (a string); "" when the libraries did not load.
  if (!markdownReady()) return "";
  return purifier.sanitize(markdownParser.parse(String(text ?? "")), PURIFY_CONFIG);
}

function showMarkdown(element, text) {
  // Puts ``text`` rendered into ``element`` as sanitised nodes (never as an HTML string); plain text as a fallback.
  element.classList.add("markdown");
  if (!markdownReady()) {
    element.classList.add("plain");
    element.textContent = text;
    return;
  }
  try {
    const html = markdownParser.parse(String(text ?? ""));
    element.replaceChildren(purifier.sanitize(html, { ...PURIFY_CONFIG, RETURN_DOM_FRAGMENT: true }));
    element.classList.remove("plain");
  } catch {
    element.classList.add("plain");
    element.textContent = text;
  }
}
