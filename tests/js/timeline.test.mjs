// What the timeline computes: times, lanes, numeric fields, buckets, series, snaps, zoom.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  SCOPE_LANE,
  bucketKind,
  bucketize,
  buildModel,
  fullWindow,
  lastAtOrBefore,
  lineSeries,
  numericFields,
  parseTime,
  snapPoints,
  snapTo,
  timeAt,
  tryBands,
  valueRange,
  xOf,
  zoomWindow,
} from "../../eventstore/service/static/timeline.js";

const T0 = Date.parse("2026-03-01T12:00:00Z");
const iso = (ms) => new Date(ms).toISOString();

function event(seq, kind, key, value, seconds, tryNumber = 1) {
  return {
    seq,
    version: seq,
    kind,
    key,
    value,
    recorded_at: iso(T0 + seconds * 1000),
    try_number: tryNumber,
    actor: "task",
  };
}

test("parseTime keeps milliseconds and cuts microseconds", () => {
  assert.equal(parseTime("2026-03-01T12:00:00.123456Z"), T0 + 123);
  assert.equal(parseTime("2026-03-01T12:00:00Z"), T0);
  assert.ok(Number.isNaN(parseTime(null)));
});

test("numericFields finds numbers at the top and inside JSON objects, not booleans or arrays", () => {
  assert.deepEqual(numericFields(42), [{ path: "", value: 42 }]);
  assert.deepEqual(numericFields({ rows_loaded: 5000, stage: "load", ok: true, parts: [1, 2] }), [
    { path: "rows_loaded", value: 5000 },
  ]);
  assert.deepEqual(numericFields({ progress: { rows: 3, batch: { n: 7 } }, total: 1.5 }), [
    { path: "progress.rows", value: 3 },
    { path: "total", value: 1.5 },
  ]);
  assert.deepEqual(numericFields(true), []);
  assert.deepEqual(numericFields("12"), []);
  assert.deepEqual(numericFields(null), []);
});

test("buildModel makes one lane per key, sorted, with the scope lane first for clears", () => {
  const model = buildModel([
    event(1, "set", "offset", 10, 0),
    event(2, "set", "job_id", "spark-1", 1),
    event(3, "clear", null, null, 2),
    event(4, "set", "offset", 20, 3, 2),
  ]);
  assert.deepEqual(model.lanes.map((l) => l.id), [SCOPE_LANE, "job_id", "offset"]);
  assert.deepEqual(model.lanes[2].events, [0, 3]);
  assert.deepEqual(model.lanes[0].events, [2]);
  assert.equal(model.t0, T0);
  assert.equal(model.t1, T0 + 3000);
});

test("a numeric series per key and per numeric field, broken by deletes and clears", () => {
  const model = buildModel([
    event(1, "set", "progress", { rows_loaded: 100, stage: "a" }, 0),
    event(2, "set", "progress", { rows_loaded: 200, stage: "b" }, 1),
    event(3, "delete", "progress", null, 2),
    event(4, "set", "progress", { rows_loaded: 50 }, 3),
    event(5, "set", "name", "text only", 4),
  ]);
  const progress = model.lanes.find((l) => l.id === "progress");
  const series = progress.series.get("progress.rows_loaded");
  assert.deepEqual(
    series.map((p) => p.v),
    [100, 200, null, 50],
  );
  const name = model.lanes.find((l) => l.id === "name");
  assert.equal(name.series.size, 0);
});

test("xOf and timeAt are inverse", () => {
  const win = { from: T0, to: T0 + 10_000 };
  assert.equal(xOf(T0 + 5000, win, 200), 100);
  assert.equal(timeAt(100, win, 200), T0 + 5000);
});

test("bucketize draws at most one mark per pixel column, whatever the number of events", () => {
  const events = [];
  for (let n = 0; n < 10_000; n++) events.push(event(n + 1, n % 500 === 7 ? "delete" : "set", "k", n, n));
  const model = buildModel(events);
  const win = fullWindow(model);
  const lane = model.lanes[0];
  const buckets = bucketize(lane.events, model.events, win, 800, 4);
  assert.ok(buckets.length <= 200, `${buckets.length} marks`);
  assert.ok(buckets.length > 150);
  const total = buckets.reduce((sum, b) => sum + b.count, 0);
  assert.equal(total, 10_000);
  const deletes = buckets.reduce((sum, b) => sum + (b.kinds.delete ?? 0), 0);
  assert.equal(deletes, 20);
  // A lone delete among sets is what the mark shows.
  const mixed = buckets.find((b) => b.kinds.delete);
  assert.equal(bucketKind(mixed), "delete");
  // Columns are in order and each bucket spans first..last of its events.
  for (let n = 1; n < buckets.length; n++) assert.ok(buckets[n].column > buckets[n - 1].column);
  assert.ok(buckets.every((b) => b.first <= b.last));
});

test("bucketize only counts events inside the window", () => {
  const model = buildModel([0, 10, 20, 30, 40].map((s, n) => event(n + 1, "set", "k", n, s)));
  const win = { from: T0 + 15_000, to: T0 + 35_000 };
  const buckets = bucketize(model.lanes[0].events, model.events, win, 100, 4);
  assert.deepEqual(buckets.map((b) => b.last), [2, 3]);
  assert.deepEqual(buckets.map((b) => b.count), [1, 1]);
});

test("bucketKind of a single-kind bucket is that kind", () => {
  assert.equal(bucketKind({ kinds: { set: 40 } }), "set");
  assert.equal(bucketKind({ kinds: { set: 40, clear: 1, delete: 2 } }), "clear");
  assert.equal(bucketKind({ kinds: { set: 1, delete: 1 } }), "delete");
});

test("lineSeries keeps one point per column with the column's min, max and last value", () => {
  const points = [];
  for (let n = 0; n < 10_000; n++) points.push({ t: T0 + n, v: n % 10, index: n });
  const reduced = lineSeries(points, { from: T0, to: T0 + 10_000 }, 100, 2);
  assert.ok(reduced.length <= 50);
  assert.ok(reduced.every((p) => p.min === 0 && p.max === 9));
  assert.equal(reduced[reduced.length - 1].v, 9);
});

test("lineSeries keeps the point before the window and the breaks of deletes", () => {
  const points = [
    { t: T0, v: 5, index: 0 },
    { t: T0 + 5000, v: 7, index: 1 },
    { t: T0 + 6000, v: null, index: 2 },
    { t: T0 + 8000, v: 9, index: 3 },
  ];
  const reduced = lineSeries(points, { from: T0 + 4000, to: T0 + 10_000 }, 600, 2);
  assert.deepEqual(reduced.map((p) => p.v), [5, 7, null, 9]);
  assert.equal(reduced[0].x, 0); // entered from the left edge
  assert.deepEqual(valueRange(reduced), { low: 5, high: 9 });
  assert.deepEqual(valueRange([{ v: 3, min: 3, max: 3 }]), { low: 2, high: 4 });
});

const TRIES = [
  {
    try_number: 1,
    first_write_at: "2026-03-01T12:00:00Z",
    last_write_at: "2026-03-01T12:04:05Z",
    writes: 27,
  },
  {
    try_number: 2,
    first_write_at: "2026-03-01T12:10:05Z",
    last_write_at: "2026-03-01T12:12:55Z",
    writes: 23,
  },
];

test("tries become bands and the scrubber's snap points, in time order", () => {
  const bands = tryBands(TRIES);
  assert.deepEqual(bands.map((b) => [b.tryNumber, b.from, b.to]), [
    [1, T0, T0 + 245_000],
    [2, T0 + 605_000, T0 + 775_000],
  ]);
  const snaps = snapPoints(TRIES);
  assert.deepEqual(snaps.map((s) => s.label), [
    "start of try 1",
    "end of try 1",
    "start of try 2",
    "end of try 2",
  ]);
  assert.deepEqual(snaps[2].point, { start_of_try: 2 });
  assert.deepEqual(snaps[1].point, { end_of_try: 1 });
});

test("snapTo picks the nearest snap point within the tolerance, else none", () => {
  const snaps = snapPoints(TRIES);
  assert.equal(snapTo(T0 + 604_000, snaps, 5000).label, "start of try 2");
  assert.equal(snapTo(T0 + 400_000, snaps, 5000), null);
  assert.equal(snapTo(T0 + 246_000, snaps, 5000).label, "end of try 1");
});

test("zoomWindow narrows around the centre and never leaves the bounds", () => {
  const bounds = { from: 0, to: 1000 };
  assert.deepEqual(zoomWindow(bounds, 500, 0.5, bounds), { from: 250, to: 750 });
  assert.deepEqual(zoomWindow(bounds, 0, 0.5, bounds), { from: 0, to: 500 });
  assert.deepEqual(zoomWindow({ from: 250, to: 750 }, 700, 4, bounds), bounds);
  assert.deepEqual(zoomWindow({ from: 800, to: 1000 }, 1000, 2, bounds), { from: 600, to: 1000 });
});

test("lastAtOrBefore finds the last event at or before a time", () => {
  const events = [{ t: 10 }, { t: 20 }, { t: 20 }, { t: 30 }];
  assert.equal(lastAtOrBefore(events, 5), -1);
  assert.equal(lastAtOrBefore(events, 20), 2);
  assert.equal(lastAtOrBefore(events, 25), 2);
  assert.equal(lastAtOrBefore(events, 99), 3);
});

test("fullWindow covers the events and the tries with a margin", () => {
  const model = buildModel([event(1, "set", "k", 1, 100)]);
  const win = fullWindow(model, TRIES);
  assert.ok(win.from < T0 && win.to > T0 + 775_000);
});

test("fullWindow of a single event is a minute wide around it", () => {
  const model = buildModel([event(1, "set", "k", 1, 0)]);
  const win = fullWindow(model);
  assert.ok(win.to - win.from >= 60_000);
  assert.equal((win.from + win.to) / 2, T0);
});
