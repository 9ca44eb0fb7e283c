// The selected event: its fields, and the change it made to its key's previous value.

import { changeFromPrevious, formatValue } from "./diff.js";
import { h, timeText } from "./dom.js";
import { fieldTable } from "./tables.js";

/** An event's value as text; a masked (sensitive) or erased value says so instead of "null". */
function shownValue(event) {
  if (event.erased) return "(erased with its scope)";
  if (event.sensitive && event.value === null) return "(sensitive: masked for this token)";
  return JSON.stringify(event.value, null, 2);
}

function detailList(event) {
  const details = [
    ["kind", h("span", { class: `pill ${event.kind}` }, event.kind, event.rewound_to != null ? ` (rewind to seq ${event.rewound_to})` : "")],
    ["key", event.key ?? "(the whole scope)"],
    ["value", event.kind === "set" ? h("pre", { class: "value", id: "event-value" }, shownValue(event)) : "—"],
    ["try", event.try_number ?? "—"],
    ["actor", event.actor],
    ["recorded", timeText(event.t)],
    ["seq / version", `${event.seq} / ${event.version}`],
  ];
  if (event.expires_at) details.push(["expires", timeText(Date.parse(event.expires_at))]);
  if (event.detail) details.push(["detail", h("pre", { class: "value" }, JSON.stringify(event.detail, null, 2))]);
  return h("dl", { class: "event" }, details.map(([name, value]) => [h("dt", {}, name), h("dd", { "data-field": name }, value)]));
}

function changeView(events, index) {
  const event = events[index];
  const change = changeFromPrevious(events, index);
  const view = h("div", { id: "event-change" }, h("h2", {}, "Change from the previous value"), h("p", {}, change.summary));
  if (change.beforeEvent) {
    view.append(
      h("p", { class: "muted" }, `previous: ${change.beforeEvent.kind} at seq ${change.beforeEvent.seq}` +
        (change.beforeEvent.try_number != null ? `, try ${change.beforeEvent.try_number}` : "")),
    );
  }
  if (change.fields.length && !(change.fields.length === 1 && change.fields[0].path === "")) {
    view.append(fieldTable(change.fields));
  } else if (change.before !== undefined || event.kind === "delete") {
    view.append(
      h("p", { class: "mono" }, `${formatValue(change.before, 300)} → ${event.kind === "set" ? formatValue(event.value, 300) : "(deleted)"}`),
    );
  }
  return view;
}

/**
 * Show events[index] in the panel. `actions.select(n)` selects another event,
 * `actions.stateHere(event)` moves the scrubber to it, `actions.rewindHere(event)` offers a rewind.
 */
export function renderEvent(panel, events, index, actions) {
  const event = events[index];
  const step = (direction) => {
    for (let n = index + direction; n >= 0 && n < events.length; n += direction) {
      if (events[n].key === event.key) return actions.select(n);
    }
    return undefined;
  };
  panel.replaceChildren(
    h(
      "div",
      { class: "toolbar" },
      h("h2", {}, `Event seq ${event.seq}`),
      h("button", { type: "button", onclick: () => step(-1), "aria-label": "previous event of this key" }, "◀ previous"),
      h("button", { type: "button", onclick: () => step(1), "aria-label": "next event of this key" }, "next ▶"),
      h("button", { type: "button", onclick: () => actions.stateHere(event) }, "state here"),
      h("button", { type: "button", id: "rewind-here", onclick: () => actions.rewindHere(event) }, "rewind to here"),
    ),
    detailList(event),
    changeView(events, index),
  );
}
