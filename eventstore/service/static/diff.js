// Diffs as rows to draw, and what one event changed; no DOM. Tested by node --test (tests/js/).

/** JSON equality: 1 and 1.0 are one number in JSON, true and 1 are not the same value. */
export function sameValue(a, b) {
  if (a === b) return true;
  if (typeof a !== typeof b || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) return a.length === b.length && a.every((x, n) => sameValue(x, b[n]));
  if (typeof a === "object") {
    const keys = Object.keys(a);
    return keys.length === Object.keys(b).length && keys.every((k) => k in b && sameValue(a[k], b[k]));
  }
  return false;
}

/** The service's diff body in one shape: changed as {key: [old, new]}. */
export function normalizeDiff(body) {
  const changed = {};
  for (const [key, change] of Object.entries(body.changed ?? {})) {
    changed[key] = Array.isArray(change) ? [change[0], change[1]] : [change.old, change.new];
  }
  return { added: body.added ?? {}, removed: body.removed ?? {}, changed };
}

/** A diff as rows sorted by key: {key, change: added|removed|changed, old, new, fields}. */
export function diffRows(diff) {
  const rows = [];
  for (const [key, value] of Object.entries(diff.added)) {
    rows.push({ key, change: "added", old: undefined, new: value, fields: [] });
  }
  for (const [key, value] of Object.entries(diff.removed)) {
    rows.push({ key, change: "removed", old: value, new: undefined, fields: [] });
  }
  for (const [key, [old, now]] of Object.entries(diff.changed)) {
    rows.push({ key, change: "changed", old, new: now, fields: fieldChanges(old, now) });
  }
  return rows.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}

/**
 * Where two JSON values differ, field by field inside objects (to `depth`), as
 * {path, change, old, new}. Values that are not both objects differ as a whole (path "").
 */
export function fieldChanges(old, now, depth = 3, path = "") {
  if (sameValue(old, now)) return [];
  const bothObjects = isObject(old) && isObject(now);
  if (!bothObjects || depth === 0) return [{ path, change: "changed", old, new: now }];
  const out = [];
  const names = [...new Set([...Object.keys(old), ...Object.keys(now)])].sort();
  for (const name of names) {
    const at = path ? `${path}.${name}` : name;
    if (!(name in now)) out.push({ path: at, change: "removed", old: old[name], new: undefined });
    else if (!(name in old)) out.push({ path: at, change: "added", old: undefined, new: now[name] });
    else out.push(...fieldChanges(old[name], now[name], depth - 1, at));
  }
  return out;
}

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/**
 * What an event changed: the key's value before it (the previous set of the key, unless a
 * delete or a clear came after it) and the changes from that value to the event's.
 * `events` are in log order, `index` the event's place in it.
 */
export function changeFromPrevious(events, index) {
  const event = events[index];
  if (event.key === null || event.key === undefined) {
    return { before: undefined, beforeEvent: null, fields: [], summary: describeScopeEvent(event) };
  }
  let beforeEvent = null;
  for (let n = index - 1; n >= 0; n--) {
    const other = events[n];
    if (other.kind === "clear" || other.key === event.key) {
      beforeEvent = other;
      break;
    }
  }
  const before = beforeEvent && beforeEvent.kind === "set" ? beforeEvent.value : undefined;
  const after = event.kind === "set" ? event.value : undefined;
  let summary;
  if (before === undefined && after === undefined) summary = "was already absent";
  else if (before === undefined) summary = beforeEvent ? `set again after a ${beforeEvent.kind}` : "first set";
  else if (after === undefined) summary = "deleted";
  else if (sameValue(before, after)) summary = "set to the same value";
  else summary = "changed";
  const fields = before !== undefined && after !== undefined ? fieldChanges(before, after) : [];
  return { before, beforeEvent, fields, summary };
}

function describeScopeEvent(event) {
  if (event.kind === "clear") return "every key of the scope removed";
  if (event.kind === "compacted") {
    const d = event.detail ?? {};
    const removed = d.events_removed ?? "some";
    return `compaction removed ${removed} events${d.reason ? ` (${d.reason})` : ""}`;
  }
  return event.kind;
}

/** A JSON value as short text: strings quoted, long text cut with an ellipsis. */
export function formatValue(value, max = 80) {
  if (value === undefined) return "—";
  let text;
  try {
    text = JSON.stringify(value);
  } catch {
    text = String(value);
  }
  if (text === undefined) text = String(value);
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** The one-click comparisons for a list of tries: the end of each try against the next one's,
 *  and each try's start against its end. */
export function tryComparisons(tries) {
  const numbers = tries.map((t) => t.try_number).sort((a, b) => a - b);
  const out = [];
  for (let n = 0; n + 1 < numbers.length; n++) {
    out.push({
      label: `end of try ${numbers[n]} → end of try ${numbers[n + 1]}`,
      from: { end_of_try: numbers[n] },
      to: { end_of_try: numbers[n + 1] },
    });
  }
  for (const number of numbers) {
    out.push({
      label: `start → end of try ${number}`,
      from: { start_of_try: number },
      to: { end_of_try: number },
    });
  }
  return out;
}

/** A point as words: {end_of_try: 2} -> "end of try 2", {seq: 41} -> "seq 41". */
export function pointLabel(point) {
  const [kind, value] = Object.entries(point)[0];
  switch (kind) {
    case "end_of_try":
      return `end of try ${value}`;
    case "start_of_try":
      return `start of try ${value}`;
    case "at":
      return `time ${value}`;
    default:
      return `${kind} ${value}`;
  }
}
