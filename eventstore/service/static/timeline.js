// What the timeline computes, with no DOM: times, lanes, buckets of marks per pixel column,
// numeric series, try bands and snap points. Tested by node --test (tests/js/).

export const KINDS = ["set", "delete", "clear", "compacted"];
export const SCOPE_LANE = "\u0000scope"; // clears and markers: events of the scope, not of a key

/** Milliseconds since the epoch of an ISO time; microseconds are cut to milliseconds. */
export function parseTime(iso) {
  if (typeof iso !== "string") return NaN;
  const trimmed = iso.replace(/(\.\d{3})\d+/, "$1");
  return Date.parse(trimmed);
}

/** Every number in a value: the value itself, or fields of objects (nested up to `depth`).
 *  Booleans are not numbers; arrays are left out (their items have no stable name). */
export function numericFields(value, depth = 2, prefix = "") {
  const found = [];
  if (typeof value === "number" && Number.isFinite(value)) {
    found.push({ path: prefix, value });
  } else if (value !== null && typeof value === "object" && !Array.isArray(value) && depth > 0) {
    for (const name of Object.keys(value).sort()) {
      const path = prefix ? `${prefix}.${name}` : name;
      found.push(...numericFields(value[name], depth - 1, path));
    }
  }
  return found;
}

/**
 * The model the page draws: events with their times, one lane per key (plus the scope lane for
 * clears and markers when there are any), and the numeric series per lane.
 * A series is named by the key and, for a field inside a JSON value, the field's path
 * ("progress.rows_loaded"). A series ends at a delete or a clear (a null point breaks the line).
 */
export function buildModel(events) {
  const items = events.map((event, index) => ({ ...event, t: parseTime(event.recorded_at), index }));
  const lanes = new Map();
  const lane = (id) => {
    let found = lanes.get(id);
    if (found === undefined) {
      found = { id, key: id === SCOPE_LANE ? null : id, events: [], series: new Map() };
      lanes.set(id, found);
    }
    return found;
  };
  for (const item of items) {
    const target = item.key === null || item.key === undefined ? lane(SCOPE_LANE) : lane(item.key);
    target.events.push(item.index);
    if (item.kind === "set") {
      for (const { path, value } of numericFields(item.value)) {
        const name = path ? `${item.key}.${path}` : item.key;
        let series = target.series.get(name);
        if (series === undefined) target.series.set(name, (series = []));
        series.push({ t: item.t, v: value, index: item.index });
      }
    }
    if (item.kind === "delete" || item.kind === "clear") {
      const affected = item.kind === "clear" ? [...lanes.values()] : [target];
      for (const each of affected) {
        for (const series of each.series.values()) {
          if (series.length && series[series.length - 1].v !== null) {
            series.push({ t: item.t, v: null, index: item.index });
          }
        }
      }
    }
  }
  const ordered = [...lanes.values()].sort((a, b) => {
    if (a.id === SCOPE_LANE) return -1;
    if (b.id === SCOPE_LANE) return 1;
    return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
  });
  for (const each of ordered) {
    for (const [name, series] of [...each.series]) {
      if (!series.some((p) => p.v !== null)) each.series.delete(name);
    }
  }
  const times = items.map((i) => i.t).filter(Number.isFinite);
  const t0 = times.length ? times[0] : Date.now(); // recorded_at never goes backwards
  const t1 = times.length ? times[times.length - 1] : t0;
  return { events: items, lanes: ordered, t0, t1 };
}

export const MIN_SPAN_MS = 60_000;

/** The full time range of a model with a margin on each side, at least a minute wide. */
export function fullWindow(model, tries = []) {
  let from = model.t0;
  let to = model.t1;
  for (const t of tries) {
    from = Math.min(from, parseTime(t.first_write_at));
    to = Math.max(to, parseTime(t.last_write_at));
  }
  if (to - from < MIN_SPAN_MS) {
    const middle = (from + to) / 2;
    from = middle - MIN_SPAN_MS / 2;
    to = middle + MIN_SPAN_MS / 2;
  }
  const margin = (to - from) * 0.03;
  return { from: from - margin, to: to + margin };
}

/** x in pixels of time t in a window drawn `width` pixels wide. */
export function xOf(t, window, width) {
  return ((t - window.from) / (window.to - window.from)) * width;
}

/** The time at x pixels. */
export function timeAt(x, window, width) {
  return window.from + (x / width) * (window.to - window.from);
}

/**
 * One mark per pixel column: the events of a lane (indices into `events`, time order) that fall
 * inside the window, gathered into columns `columnPx` wide. Each bucket knows its count, its kinds,
 * and its first and last event, so at most width / columnPx marks are drawn per lane, whatever
 * the number of events.
 */
export function bucketize(indices, events, window, width, columnPx = 4) {
  const columns = Math.max(1, Math.floor(width / columnPx));
  const span = window.to - window.from;
  const buckets = [];
  let current = null;
  const start = lowerBound(indices, (i) => events[i].t >= window.from);
  for (let n = start; n < indices.length; n++) {
    const event = events[indices[n]];
    if (event.t > window.to) break;
    const column = Math.min(columns - 1, Math.floor(((event.t - window.from) / span) * columns));
    if (current === null || current.column !== column) {
      current = {
        column,
        x: (column + 0.5) * (width / columns),
        count: 0,
        kinds: {},
        first: indices[n],
        last: indices[n],
      };
      buckets.push(current);
    }
    current.count += 1;
    current.kinds[event.kind] = (current.kinds[event.kind] ?? 0) + 1;
    current.last = indices[n];
  }
  return buckets;
}

/** The kind a bucket is drawn as: the only kind, else the rarest one, so a lone delete among
 *  many sets stays visible (on a tie, the rarer kind of event: compacted, clear, delete, set). */
export function bucketKind(bucket) {
  const kinds = Object.keys(bucket.kinds);
  if (kinds.length === 1) return kinds[0];
  return kinds.sort((a, b) => bucket.kinds[a] - bucket.kinds[b] || KINDS.indexOf(b) - KINDS.indexOf(a))[0];
}

/**
 * A numeric series reduced to at most one point per pixel column inside the window: the column's
 * last value, with its min and max for an envelope. A null point (delete, clear) breaks the line;
 * the point just before the window is kept so the line enters from the left edge.
 */
export function lineSeries(series, window, width, columnPx = 2) {
  const columns = Math.max(1, Math.floor(width / columnPx));
  const span = window.to - window.from;
  const out = [];
  let start = lowerBound(series, (p) => p.t >= window.from);
  if (start > 0) start -= 1;
  for (let n = start; n < series.length; n++) {
    const point = series[n];
    const clamped = Math.max(window.from, Math.min(window.to, point.t));
    const column = Math.min(columns - 1, Math.floor(((clamped - window.from) / span) * columns));
    const last = out[out.length - 1];
    if (point.v === null) {
      out.push({ x: xOf(clamped, window, width), v: null, min: null, max: null, index: point.index });
    } else if (last && last.v !== null && last.column === column) {
      last.v = point.v;
      last.min = Math.min(last.min, point.v);
      last.max = Math.max(last.max, point.v);
      last.index = point.index;
    } else {
      out.push({
        column,
        x: xOf(clamped, window, width),
        v: point.v,
        min: point.v,
        max: point.v,
        index: point.index,
      });
    }
    if (point.t > window.to) break;
  }
  return out;
}

/** The value range of reduced points, widened when flat so a line can be drawn. */
export function valueRange(points) {
  let low = Infinity;
  let high = -Infinity;
  for (const p of points) {
    if (p.v === null) continue;
    low = Math.min(low, p.min);
    high = Math.max(high, p.max);
  }
  if (low === Infinity) return { low: 0, high: 1 };
  if (low === high) return { low: low - 1, high: high + 1 };
  return { low, high };
}

/** Try bands (first write to last write) and the snap points a scrubber stops at. */
export function tryBands(tries) {
  return tries.map((t) => ({
    tryNumber: t.try_number,
    from: parseTime(t.first_write_at),
    to: parseTime(t.last_write_at),
    writes: t.writes,
  }));
}

export function snapPoints(tries) {
  const snaps = [];
  for (const t of tries) {
    snaps.push({
      t: parseTime(t.first_write_at),
      label: `start of try ${t.try_number}`,
      point: { start_of_try: t.try_number },
    });
    snaps.push({
      t: parseTime(t.last_write_at),
      label: `end of try ${t.try_number}`,
      point: { end_of_try: t.try_number },
    });
  }
  return snaps.sort((a, b) => a.t - b.t);
}

/** The snap point within `tolerance` ms of t, the nearest one, else null. */
export function snapTo(t, snaps, tolerance) {
  let best = null;
  for (const snap of snaps) {
    const distance = Math.abs(snap.t - t);
    if (distance <= tolerance && (best === null || distance < Math.abs(best.t - t))) best = snap;
  }
  return best;
}

/** A window `factor` times as wide around `center`, kept inside `bounds`. */
export function zoomWindow(window, center, factor, bounds) {
  const span = Math.min(bounds.to - bounds.from, Math.max(1, (window.to - window.from) * factor));
  const ratio = (center - window.from) / (window.to - window.from);
  let from = center - span * ratio;
  let to = from + span;
  if (from < bounds.from) {
    from = bounds.from;
    to = from + span;
  }
  if (to > bounds.to) {
    to = bounds.to;
    from = to - span;
  }
  return { from, to };
}

/** The index of the last event at or before t (events in time order), or -1. */
export function lastAtOrBefore(events, t) {
  return lowerBound(events, (e) => e.t > t) - 1;
}

/** The first index n of a sorted array where test(array[n]) is true (array.length if none). */
export function lowerBound(array, test) {
  let low = 0;
  let high = array.length;
  while (low < high) {
    const middle = (low + high) >> 1;
    if (test(array[middle])) high = middle;
    else low = middle + 1;
  }
  return low;
}
