// The timeline's drawing: lanes of marks (bucketed when they crowd), numeric lines, try bands,
// the axis, the scrubber's cursor and the selected event, as one SVG.

import { formatValue } from "./diff.js";
import { h, s, timeText } from "./dom.js";
import { SCOPE_LANE, bucketKind, bucketize, lineSeries, timeAt, tryBands, valueRange, xOf } from "./timeline.js";

const TOP = 42; // try labels
const AXIS = 22;
const MARK_ROW = 24;
const SERIES_ROW = 44;
const MAX_SERIES = 4;

/**
 * Draw `view` ({ model, tries, window, scrubTime, selected }) `width` pixels wide.
 * Returns the SVG and its layout, which `hit` and `cursorX` read.
 */
export function drawTimeline(view, width) {
  const gutter = width < 600 ? 92 : 150;
  const plot = width - gutter - 8;
  const lanes = [];
  let y = TOP;
  for (const lane of view.model.lanes) {
    const series = [...lane.series].slice(0, MAX_SERIES);
    const height = MARK_ROW + series.length * SERIES_ROW;
    lanes.push({ lane, y, height, series });
    y += height;
  }
  const height = Math.max(y, TOP + MARK_ROW) + AXIS;
  const layout = { width, gutter, plot, lanes, height };
  const win = view.window;
  const x = (t) => gutter + xOf(t, win, plot);
  const svg = s("svg", {
    class: "timeline",
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: "img",
    "aria-label": "timeline of the scope's events",
  });
  svg.append(
    s("defs", {}, s("clipPath", { id: "plot-clip" }, s("rect", { x: gutter, y: 0, width: plot, height }))),
  );
  const plotLayer = s("g", { "clip-path": "url(#plot-clip)" });

  // Tries: shaded bands with their boundaries labelled.
  const bands = s("g", { class: "tries" });
  tryBands(view.tries).forEach((band, n) => {
    const x0 = x(band.from);
    const x1 = Math.max(x(band.to), x0 + 2);
    bands.append(
      s("rect", {
        class: `band band-${n % 2}`,
        x: x0,
        y: TOP - 6,
        width: x1 - x0,
        height: height - AXIS - TOP + 6,
        "data-try": band.tryNumber,
      }, s("title", {}, `try ${band.tryNumber}: ${band.writes} writes`)),
      s("line", { class: "boundary", x1: x0, x2: x0, y1: 14, y2: height - AXIS }),
      s("text", { class: "boundary-label", x: x0 + 3, y: 12, "data-try-label": band.tryNumber }, `try ${band.tryNumber}`),
      s("line", { class: "boundary", x1: x1, x2: x1, y1: 18, y2: height - AXIS }),
      s(
        "text",
        { class: "boundary-end", x: x1 - 3, y: 27, "text-anchor": "end", "data-try-end": band.tryNumber },
        `end ${band.tryNumber}`,
      ),
    );
  });
  plotLayer.append(bands);

  // Lanes.
  const labels = s("g", { class: "labels" });
  const marks = s("g", { class: "marks" });
  const events = view.model.events;
  for (const row of lanes) {
    const { lane } = row;
    const name = lane.id === SCOPE_LANE ? "(scope)" : lane.key;
    const short = name.length > gutter / 7 ? `${name.slice(0, Math.floor(gutter / 7) - 1)}…` : name;
    labels.append(
      s("line", { class: "lane-sep", x1: 0, x2: width, y1: row.y + row.height, y2: row.y + row.height }),
      s("text", { class: "lane-label", x: 4, y: row.y + 15, "data-lane": name }, short, s("title", {}, name)),
    );
    const mid = row.y + MARK_ROW / 2;
    for (const bucket of bucketize(lane.events, events, win, plot, 4)) {
      const kind = bucketKind(bucket);
      const bx = gutter + bucket.x;
      const attrs = {
        "data-index": bucket.last,
        "data-kind": kind,
        "data-count": bucket.count,
        "data-kinds": Object.entries(bucket.kinds).map(([k, n]) => `${k}:${n}`).join(","),
      };
      const title = s("title", {}, bucketTitle(bucket, events));
      if (bucket.count > 1) {
        const tall = Math.min(MARK_ROW - 4, 6 + 3 * Math.log2(bucket.count));
        marks.append(
          s("rect", { ...attrs, class: `mark bucket mark-${kind}`, x: bx - 1.5, y: mid - tall / 2, width: 3, height: tall }, title),
        );
      } else {
        marks.append(markShape(kind, bx, mid, attrs, title));
      }
      if (bucket.kinds.clear) {
        plotLayer.append(s("line", { class: "clear-line", x1: bx, x2: bx, y1: TOP - 6, y2: height - AXIS }));
      }
    }
    row.series.forEach(([seriesName, points], n) => {
      const top = row.y + MARK_ROW + n * SERIES_ROW + 4;
      drawSeries(plotLayer, labels, seriesName, points, top, SERIES_ROW - 10, gutter, plot, win);
    });
  }
  plotLayer.append(marks);
  svg.append(plotLayer, labels, axis(gutter, plot, height, win));

  // The scrubber's moment and the selected event.
  if (view.scrubTime !== null) {
    const cx = x(view.scrubTime);
    svg.append(s("line", { class: "cursor", id: "cursor", x1: cx, x2: cx, y1: TOP - 8, y2: height - AXIS }));
  }
  if (view.selected !== null) {
    const event = events[view.selected];
    const row = lanes.find((r) => r.lane.events.includes(view.selected));
    if (row && event.t >= win.from && event.t <= win.to) {
      svg.append(s("circle", { class: "selected", cx: x(event.t), cy: row.y + MARK_ROW / 2, r: 7 }));
    }
  }
  return { svg, layout };
}

/** Where the scrubber's cursor goes for time t. */
export function cursorX(layout, window, t) {
  return layout.gutter + xOf(t, window, layout.plot);
}

/**
 * What a click at (px, py) in layout coordinates hits: { index } of the nearest event on a
 * lane's mark row, or { t } a time to scrub to, or null left of the plot.
 */
export function hit(layout, window, events, px, py) {
  if (px < layout.gutter) return null;
  const t = timeAt(px - layout.gutter, window, layout.plot);
  const row = layout.lanes.find((r) => py >= r.y && py < r.y + MARK_ROW);
  if (row) {
    const index = nearestEvent(events, row.lane.events, t, (8 * (window.to - window.from)) / layout.plot);
    if (index !== null) return { index, t };
  }
  return { index: null, t };
}

function nearestEvent(events, indices, t, tolerance) {
  let best = null;
  for (const index of indices) {
    const d = Math.abs(events[index].t - t);
    if (d <= tolerance && (best === null || d <= Math.abs(events[best].t - t))) best = index;
  }
  return best;
}

function markShape(kind, x, y, attrs, title) {
  const cls = `mark mark-${kind}`;
  switch (kind) {
    case "delete":
      return s("path", { ...attrs, class: cls, d: `M${x - 4} ${y - 4}L${x + 4} ${y + 4}M${x - 4} ${y + 4}L${x + 4} ${y - 4}` }, title);
    case "clear":
      return s("rect", { ...attrs, class: cls, x: x - 4.5, y: y - 4.5, width: 9, height: 9 }, title);
    case "compacted":
      return s("path", { ...attrs, class: cls, d: `M${x} ${y - 6}L${x + 6} ${y}L${x} ${y + 6}L${x - 6} ${y}Z` }, title);
    default:
      return s("circle", { ...attrs, class: cls, cx: x, cy: y, r: 4 }, title);
  }
}

function bucketTitle(bucket, events) {
  const last = events[bucket.last];
  if (bucket.count === 1) {
    const value = last.kind === "set" ? ` = ${formatValue(last.value, 60)}` : "";
    return `seq ${last.seq} ${last.kind}${value} · try ${last.try_number ?? "—"} · ${timeText(last.t)}`;
  }
  const kinds = Object.entries(bucket.kinds).map(([k, n]) => `${n} ${k}`).join(", ");
  return `${bucket.count} events (${kinds}), seq ${events[bucket.first].seq}–${last.seq}`;
}

function drawSeries(layer, labels, name, points, top, height, gutter, plot, win) {
  const reduced = lineSeries(points, win, plot, 2);
  const { low, high } = valueRange(reduced);
  const y = (v) => top + height - ((v - low) / (high - low)) * height;
  let d = "";
  let pen = false;
  let envelope = "";
  for (const p of reduced) {
    if (p.v === null) {
      pen = false;
      continue;
    }
    const px = gutter + p.x;
    // Values hold until the next write: a step line.
    d += pen ? `H${px.toFixed(1)}V${y(p.v).toFixed(1)}` : `M${px.toFixed(1)} ${y(p.v).toFixed(1)}`;
    pen = true;
    if (p.max !== p.min) envelope += `M${px.toFixed(1)} ${y(p.min).toFixed(1)}V${y(p.max).toFixed(1)}`;
  }
  if (pen && reduced.length) d += `H${(gutter + plot).toFixed(1)}`;
  layer.append(s("path", { class: "series", d, "data-series": name }));
  if (envelope) layer.append(s("path", { class: "envelope", d: envelope }));
  const shortName = name.includes(".") ? name.slice(name.indexOf(".") + 1) : name;
  labels.append(
    s("text", { class: "series-label", x: 10, y: top + 10 }, `${shortName.length > 18 ? `${shortName.slice(0, 17)}…` : shortName}`),
    s("text", { class: "series-label", x: 10, y: top + height }, `${fmtNumber(low)}–${fmtNumber(high)}`),
  );
}

function fmtNumber(n) {
  return Math.abs(n) >= 1e6 || (Math.abs(n) < 1e-3 && n !== 0) ? n.toExponential(2) : String(+n.toFixed(3));
}

function axis(gutter, plot, height, win) {
  const g = s("g", { class: "axis" });
  const ticks = Math.max(2, Math.floor(plot / 110));
  const span = win.to - win.from;
  const withDate = span > 36 * 3600 * 1000;
  for (let n = 0; n <= ticks; n++) {
    const t = win.from + (span * n) / ticks;
    const x = gutter + (plot * n) / ticks;
    const iso = new Date(t).toISOString();
    const label = withDate ? iso.slice(5, 16).replace("T", " ") : iso.slice(11, span < 10000 ? 23 : 19);
    g.append(
      s("line", { class: "grid", x1: x, x2: x, y1: height - AXIS, y2: height - AXIS + 4 }),
      s("text", { x, y: height - 6, "text-anchor": n === 0 ? "start" : n === ticks ? "end" : "middle" }, label),
    );
  }
  g.append(s("line", { class: "grid", x1: gutter, x2: gutter + plot, y1: height - AXIS, y2: height - AXIS }));
  return g;
}

export function legend() {
  const item = (kind, label) =>
    h("span", {}, svgIcon(kind), ` ${label}`);
  return h(
    "span",
    { class: "legend" },
    item("set", "set"),
    item("delete", "delete"),
    item("clear", "clear"),
    item("compacted", "compacted"),
    h("span", {}, svgIcon("bucket"), " many"),
  );
}

function svgIcon(kind) {
  const svg = s("svg", { width: 14, height: 14, viewBox: "0 0 14 14", class: "timeline", "aria-hidden": "true" });
  if (kind === "bucket") svg.append(s("rect", { class: "mark-set bucket", x: 5.5, y: 1, width: 3, height: 12 }));
  else svg.append(markShape(kind, 7, 7, {}, null));
  return svg;
}

