// "Compare two points": one-click comparisons of the tries, and a form for any two points.

import * as api from "./api.js";
import { diffRows, normalizeDiff, pointLabel, tryComparisons } from "./diff.js";
import { h } from "./dom.js";
import { diffTable } from "./tables.js";

function pointInputs(prefix, initial) {
  const kind = h(
    "select",
    { name: `${prefix}-kind`, "aria-label": `${prefix} point` },
    ["end_of_try", "start_of_try", "seq", "version", "at"].map((k) =>
      h("option", { value: k }, k.replaceAll("_", " ")),
    ),
  );
  kind.value = Object.keys(initial)[0];
  const value = h("input", { name: `${prefix}-value`, "aria-label": `${prefix} value`, value: Object.values(initial)[0] });
  return { kind, value, read: () => ({ [kind.value]: value.value.trim() }) };
}

/** The points the form starts with: the last two tries, else the one try, else the versions. */
function initialPoints(tries, events) {
  const numbers = tries.map((t) => t.try_number);
  if (numbers.length > 1) return [{ end_of_try: numbers.at(-2) }, { end_of_try: numbers.at(-1) }];
  if (numbers.length === 1) return [{ start_of_try: numbers[0] }, { end_of_try: numbers[0] }];
  return [{ version: 0 }, { version: events.length ? events.at(-1).version : 0 }];
}

export function renderDiffPanel(panel, scope, tries, events, { isDisposed, onAuthError }) {
  const initial = initialPoints(tries, events);
  const from = pointInputs("from", initial[0]);
  const to = pointInputs("to", initial[1]);
  const result = h("div", { id: "diff-result" });
  const run = async (a, b) => {
    result.replaceChildren(h("p", { class: "muted" }, "Comparing…"));
    try {
      const body = await api.diff(scope, a, b);
      if (isDisposed()) return;
      const rows = diffRows(normalizeDiff(body));
      result.replaceChildren(
        h("h2", { id: "diff-title" }, `${pointLabel(a)} → ${pointLabel(b)}`),
        rows.length ? diffTable(rows) : h("p", { class: "muted" }, "No changes."),
      );
    } catch (error) {
      if (!onAuthError(error)) result.replaceChildren(h("p", { class: "error" }, error.message));
    }
  };
  const form = h(
    "form",
    { class: "diff-points", id: "diff-form" },
    h("fieldset", {}, h("legend", {}, "From"), from.kind, from.value),
    h("fieldset", {}, h("legend", {}, "To"), to.kind, to.value),
    h("button", { type: "submit" }, "Compare"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run(from.read(), to.read());
  });
  panel.replaceChildren(
    h("h2", {}, "Compare two points"),
    h("div", { class: "quick", id: "quick-diffs" }, tryComparisons(tries).map((c) =>
      h("button", { type: "button", onclick: () => run(c.from, c.to) }, c.label),
    )),
    form,
    result,
  );
}
