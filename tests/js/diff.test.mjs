// Diff rows, field changes, the change an event made, value text and the one-click comparisons.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  changeFromPrevious,
  diffRows,
  fieldChanges,
  formatValue,
  normalizeDiff,
  pointLabel,
  sameValue,
  tryComparisons,
} from "../../eventstore/service/static/diff.js";

test("the service's diff body becomes rows sorted by key", () => {
  const body = {
    from: "At.end_of_try(1)",
    to: "At.end_of_try(2)",
    added: { done: true },
    removed: { error: "OOM", lock: "worker-12" },
    changed: { offset: [60000, 100000], job_id: ["spark-7f3a", "spark-9b1c"] },
  };
  const rows = diffRows(normalizeDiff(body));
  assert.deepEqual(
    rows.map((r) => [r.key, r.change]),
    [
      ["done", "added"],
      ["error", "removed"],
      ["job_id", "changed"],
      ["lock", "removed"],
      ["offset", "changed"],
    ],
  );
  const offset = rows.find((r) => r.key === "offset");
  assert.equal(offset.old, 60000);
  assert.equal(offset.new, 100000);
  assert.deepEqual(offset.fields, [{ path: "", change: "changed", old: 60000, new: 100000 }]);
});

test("a changed entry given as {old, new} reads the same as [old, new]", () => {
  assert.deepEqual(normalizeDiff({ changed: { k: { old: 1, new: 2 } } }).changed, { k: [1, 2] });
  assert.deepEqual(normalizeDiff({}), { added: {}, removed: {}, changed: {} });
});

test("fieldChanges says which fields of a JSON object changed, were added or removed", () => {
  const old = { rows_loaded: 60000, batch: 12, stage: "load", extra: { a: 1 } };
  const now = { rows_loaded: 100000, batch: 12, stage: "done", extra: { a: 2 }, note: "x" };
  assert.deepEqual(fieldChanges(old, now), [
    { path: "extra.a", change: "changed", old: 1, new: 2 },
    { path: "note", change: "added", old: undefined, new: "x" },
    { path: "rows_loaded", change: "changed", old: 60000, new: 100000 },
    { path: "stage", change: "changed", old: "load", new: "done" },
  ]);
  assert.deepEqual(fieldChanges({ a: 1, b: 2 }, { a: 1 }), [
    { path: "b", change: "removed", old: 2, new: undefined },
  ]);
  assert.deepEqual(fieldChanges([1, 2], [1, 2]), []);
  assert.deepEqual(fieldChanges("a", { a: 1 }), [{ path: "", change: "changed", old: "a", new: { a: 1 } }]);
});

test("sameValue is JSON equality", () => {
  assert.ok(sameValue({ a: [1, { b: null }] }, { a: [1, { b: null }] }));
  assert.ok(!sameValue(1, true));
  assert.ok(!sameValue({ a: 1 }, { a: 1, b: 2 }));
  assert.ok(!sameValue([1], { 0: 1 }));
  assert.ok(!sameValue(null, {}));
});

const ev = (seq, kind, key, value, tryNumber = 1) => ({ seq, kind, key, value, try_number: tryNumber });

test("changeFromPrevious compares an event with the key's previous value", () => {
  const events = [
    ev(1, "set", "progress", { rows: 1, stage: "a" }),
    ev(2, "set", "other", 5),
    ev(3, "set", "progress", { rows: 2, stage: "a" }),
    ev(4, "delete", "progress", null, 2),
    ev(5, "set", "progress", { rows: 9 }, 2),
    ev(6, "clear", null, null, 2),
    ev(7, "set", "other", 6, 2),
    ev(8, "set", "other", 6, 2),
  ];
  const first = changeFromPrevious(events, 0);
  assert.equal(first.summary, "first set");
  assert.equal(first.beforeEvent, null);

  const second = changeFromPrevious(events, 2);
  assert.equal(second.summary, "changed");
  assert.equal(second.beforeEvent.seq, 1);
  assert.deepEqual(second.fields, [{ path: "rows", change: "changed", old: 1, new: 2 }]);

  const deleted = changeFromPrevious(events, 3);
  assert.equal(deleted.summary, "deleted");
  assert.deepEqual(deleted.before, { rows: 2, stage: "a" });

  const again = changeFromPrevious(events, 4);
  assert.equal(again.summary, "set again after a delete");
  assert.equal(again.before, undefined);

  const afterClear = changeFromPrevious(events, 6);
  assert.equal(afterClear.summary, "set again after a clear");
  assert.equal(afterClear.beforeEvent.seq, 6);

  assert.equal(changeFromPrevious(events, 7).summary, "set to the same value");
  assert.equal(changeFromPrevious(events, 5).summary, "every key of the scope removed");
});

test("a compaction marker says what it removed", () => {
  const marker = { seq: 9, kind: "compacted", key: null, detail: { events_removed: 12, reason: "expired" } };
  assert.equal(changeFromPrevious([marker], 0).summary, "compaction removed 12 events (expired)");
});

test("formatValue writes JSON, cut with an ellipsis; masked values pass through as they are", () => {
  assert.equal(formatValue("spark-1"), '"spark-1"');
  assert.equal(formatValue({ a: 1 }), '{"a":1}');
  assert.equal(formatValue(undefined), "—");
  assert.equal(formatValue("x".repeat(100), 10), `"${"x".repeat(8)}…`);
  assert.equal(formatValue("***"), '"***"');
});

test("tryComparisons offers end of try N against end of try N+1, and each try's own change", () => {
  const tries = [{ try_number: 2 }, { try_number: 1 }, { try_number: 3 }];
  const labels = tryComparisons(tries).map((c) => c.label);
  assert.deepEqual(labels, [
    "end of try 1 → end of try 2",
    "end of try 2 → end of try 3",
    "start → end of try 1",
    "start → end of try 2",
    "start → end of try 3",
  ]);
  assert.deepEqual(tryComparisons(tries)[0].from, { end_of_try: 1 });
  assert.deepEqual(tryComparisons(tries)[0].to, { end_of_try: 2 });
  assert.deepEqual(tryComparisons([]), []);
});

test("pointLabel names points in words", () => {
  assert.equal(pointLabel({ end_of_try: 2 }), "end of try 2");
  assert.equal(pointLabel({ start_of_try: 1 }), "start of try 1");
  assert.equal(pointLabel({ seq: 41 }), "seq 41");
  assert.equal(pointLabel({ at: "2026-03-01T12:00:00Z" }), "time 2026-03-01T12:00:00Z");
});
