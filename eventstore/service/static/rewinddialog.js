// "Rewind to here": the diff a rewind would apply (a dry run), then, once confirmed, the
// rewind itself, conditional on the version the dry run saw. Admin tokens only.

import * as api from "./api.js";
import { diffRows, normalizeDiff } from "./diff.js";
import { h } from "./dom.js";
import { diffTable } from "./tables.js";

export async function rewindDialog(main, scope, point, label) {
  main.querySelector("#rewind-dialog")?.remove();
  const body = h("div", { id: "rewind-body" }, h("p", { class: "muted" }, "Working out what would change…"));
  const note = h("p", { id: "rewind-status", role: "alert" });
  const confirm = h("button", { type: "button", id: "rewind-confirm", disabled: true }, "Rewind");
  const cancel = h("button", { type: "button", id: "rewind-cancel", class: "quiet" }, "Cancel");
  const dialog = h(
    "dialog",
    { id: "rewind-dialog", "aria-labelledby": "rewind-title" },
    h("h2", { id: "rewind-title" }, `Rewind to ${label}?`),
    h(
      "p",
      { class: "muted" },
      "Appends the sets and deletes that make the current values what they were there. " +
        "Nothing is removed from the history; keys expired by now stay absent.",
    ),
    body,
    note,
    h("div", { class: "toolbar" }, confirm, cancel),
  );
  cancel.addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => dialog.remove());
  main.append(dialog);
  dialog.showModal();
  let plan;
  try {
    plan = await api.rewind(scope, point, { dryRun: true });
  } catch (error) {
    body.replaceChildren();
    note.className = "error";
    note.textContent = error.status === 403 ? `${error.message}.` : error.message;
    return;
  }
  const rows = diffRows(normalizeDiff(plan));
  body.replaceChildren(
    h("p", { class: "muted" }, `${plan.point} → seq ${plan.rewound_to}; the scope is at version ${plan.version}.`),
    rows.length ? diffTable(rows) : h("p", { class: "muted", id: "rewind-nothing" }, "Already there: nothing to change."),
  );
  if (!rows.length && !plan.set.length && !plan.deleted.length) return;
  confirm.disabled = false;
  confirm.addEventListener("click", async () => {
    confirm.disabled = true;
    try {
      const done = await api.rewind(scope, point, { expectedVersion: plan.version });
      note.className = "";
      note.textContent = `Rewound: ${done.set.length} set, ${done.deleted.length} deleted; version ${done.version}.`;
      dialog.dataset.done = "true";
    } catch (error) {
      note.className = "error";
      note.textContent =
        error.reason === "version_conflict"
          ? "The scope changed since this diff was shown; close and try again."
          : error.message;
    }
  });
}
