// The start page: scopes most recently written first, filtered by kind, dag, run, task and
// time, a page at a time.

import { listScopes } from "./api.js";
import { h, timeText } from "./dom.js";
import { scopeHash, scopeTitle } from "./links.js";
import { parseTime } from "./timeline.js";

const FIELDS = [
  ["dag", "DAG id"],
  ["run", "Run id"],
  ["task", "Task id"],
];

function toIso(local) {
  // <input type=datetime-local> gives local wall time without a zone; the service wants UTC.
  if (!local) return undefined;
  const ms = Date.parse(local);
  return Number.isFinite(ms) ? new Date(ms).toISOString() : undefined;
}

export function renderStart(main, crumb, initial, onAuthError) {
  crumb.textContent = "recently active scopes";
  const inputs = {};
  const kind = h(
    "select",
    { name: "kind", "aria-label": "kind" },
    h("option", { value: "" }, "tasks and assets"),
    h("option", { value: "task" }, "task instances"),
    h("option", { value: "asset" }, "assets"),
  );
  kind.value = initial.kind ?? "";
  const labelled = (text, control) => h("label", {}, text, control);
  const form = h(
    "form",
    { class: "filters", id: "filters" },
    labelled("Kind", kind),
    FIELDS.map(([name, text]) => {
      inputs[name] = h("input", { name, type: "search", value: initial[name] ?? "", placeholder: "any" });
      return labelled(text, inputs[name]);
    }),
    labelled("Written since", (inputs.since = h("input", { name: "since", type: "datetime-local", step: "1" }))),
    labelled("Written until", (inputs.until = h("input", { name: "until", type: "datetime-local", step: "1" }))),
    h("button", { type: "submit" }, "Filter"),
  );
  const body = h("tbody");
  const status = h("p", { class: "muted", role: "status" });
  const more = h("button", { type: "button", hidden: true }, "More");
  main.append(
    h("h1", {}, "Recently active scopes"),
    form,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { id: "scopes" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            h("th", {}, "Scope"),
            h("th", {}, "Last write (UTC)"),
            h("th", { class: "optional" }, "Events"),
            h("th", { class: "optional" }, "Newest try"),
          ),
        ),
        body,
      ),
    ),
    status,
    more,
  );

  let after = null;
  let filters = {};
  let disposed = false;

  async function load(reset) {
    if (reset) {
      body.replaceChildren();
      after = null;
    }
    status.textContent = "Loading…";
    more.hidden = true;
    try {
      const page = await listScopes(filters, after ?? undefined);
      if (disposed) return;
      for (const item of page.items) {
        body.append(
          h(
            "tr",
            {},
            h("td", {}, h("a", { href: scopeHash(item.scope) }, scopeTitle(item.scope))),
            h("td", { class: "mono" }, timeText(parseTime(item.updated_at))),
            h("td", { class: "optional" }, String(item.version)),
            h("td", { class: "optional" }, item.max_try === null ? "—" : String(item.max_try)),
          ),
        );
      }
      after = page.next;
      more.hidden = !page.next;
      status.textContent = body.children.length ? "" : "No scope matches.";
    } catch (error) {
      if (!onAuthError(error)) status.textContent = `Could not list scopes: ${error.message}`;
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    filters = {
      kind: kind.value || undefined,
      dag: inputs.dag.value.trim() || undefined,
      run: inputs.run.value.trim() || undefined,
      task: inputs.task.value.trim() || undefined,
      since: toIso(inputs.since.value),
      until: toIso(inputs.until.value),
    };
    load(true);
  });
  more.addEventListener("click", () => load(false));
  filters = {
    kind: initial.kind || undefined,
    dag: initial.dag || undefined,
    run: initial.run || undefined,
    task: initial.task || undefined,
  };
  load(true);
  return { dispose: () => (disposed = true) };
}
