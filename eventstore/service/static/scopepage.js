// One scope's page: the timeline (lanes, marks, tries, numeric lines), the scrubber and the
// state beside it, the selected event, and the diff between two points.

import * as api from "./api.js";
import {
  changeFromPrevious,
  diffRows,
  formatValue,
  normalizeDiff,
  pointLabel,
  tryComparisons,
} from "./diff.js";
import { clear, h, s, timeText } from "./dom.js";
import { scopeTitle } from "./links.js";
import { feedFilters, follow, sameScope } from "./live.js";
import {
  SCOPE_LANE,
  bucketKind,
  bucketize,
  buildModel,
  fullWindow,
  lastAtOrBefore,
  lineSeries,
  snapPoints,
  snapTo,
  timeAt,
  tryBands,
  valueRange,
  xOf,
  zoomWindow,
} from "./timeline.js";

const TOP = 42; // try labels
const AXIS = 22;
const MARK_ROW = 24;
const SERIES_ROW = 44;
const MAX_SERIES = 4;
const SCRUB_STEPS = 10000;

export function renderScopePage(main, crumb, scope, onAuthError) {
  crumb.textContent = scopeTitle(scope);
  const status = h("p", { class: "muted", role: "status", id: "status" }, "Loading history…");
  const summary = h("p", { class: "muted", id: "summary" });
  const live = h("span", { class: "muted live", id: "live", role: "status" });
  const box = h("div", {
    class: "timeline-box",
    id: "timeline",
    tabindex: 0,
    "aria-label": "timeline: click a mark, or step through the events with the arrow keys",
  });
  const scrub = h("input", {
    type: "range",
    id: "scrubber",
    min: 0,
    max: SCRUB_STEPS,
    value: SCRUB_STEPS,
    "aria-label": "time",
  });
  const scrubLabel = h("span", { class: "mono", id: "scrub-label" });
  const snaps = h("div", { class: "snaps", id: "snaps" });
  const stateTitle = h("h2", { id: "state-title" }, "State");
  const stateBody = h("div", { class: "state", id: "state" });
  const eventPanel = h("section", { class: "panel", id: "event" }, h("h2", {}, "Event"),
    h("p", { class: "muted" }, "Select a mark on the timeline to see the event."));
  const diffPanel = h("section", { class: "panel", id: "diff" });
  const zoom = (factor) => () => setWindow(factor);
  const toolbar = h(
    "div",
    { class: "toolbar" },
    h("button", { type: "button", onclick: zoom(0.5), title: "zoom in around the scrubber" }, "Zoom in"),
    h("button", { type: "button", onclick: zoom(2), title: "zoom out" }, "Zoom out"),
    h("button", { type: "button", onclick: zoom(0), title: "show the whole history" }, "Fit"),
    h("button", { type: "button", onclick: () => pan(-0.5), "aria-label": "pan left" }, "◀"),
    h("button", { type: "button", onclick: () => pan(0.5), "aria-label": "pan right" }, "▶"),
    legend(),
  );
  main.append(
    h("h1", {}, scopeTitle(scope), " ", live),
    summary,
    status,
    h(
      "div",
      { class: "layout" },
      h(
        "section",
        { class: "panel" },
        toolbar,
        box,
        h("div", { class: "scrubber" }, h("label", { for: "scrubber" }, "As of"), scrub, scrubLabel),
        snaps,
      ),
      h(
        "aside",
        { class: "panel" },
        stateTitle,
        stateBody,
        h("button", {
          type: "button",
          id: "rewind-point",
          class: "quiet",
          title: "make the current values what they were at this point (admins)",
          onclick: () => page.scrubPoint && rewindTo(page.scrubPoint, pointLabel(page.scrubPoint)),
        }, "Rewind to this point…"),
      ),
    ),
    eventPanel,
    diffPanel,
  );

  const page = {
    model: null,
    tries: [],
    bounds: null,
    window: null,
    snaps: [],
    scrubTime: null,
    scrubPoint: null,
    selected: null,
    disposed: false,
    layout: null,
    events: [],
    compactedBefore: null,
    feed: null,
  };

  const fail = (what) => (error) => {
    if (page.disposed || onAuthError(error)) return;
    status.textContent = `Could not load ${what}: ${error.message}`;
    status.className = "error";
  };

  // ------------------------------------------------------------------ loading

  Promise.all([
    api.tries(scope),
    api.allEvents(scope, (n) => {
      status.textContent = `Loading history… ${n} events`;
    }),
  ]).then(([tries, { events, compactedBefore }]) => {
    if (page.disposed) return;
    page.tries = tries;
    page.events = events;
    page.compactedBefore = compactedBefore;
    page.model = buildModel(events);
    page.bounds = fullWindow(page.model, tries);
    page.window = { ...page.bounds };
    page.snaps = snapPoints(tries);
    status.textContent = "";
    summarize();
    renderSnaps();
    renderDiffPanel();
    draw();
    const last = page.snaps.filter((p) => p.point.end_of_try !== undefined).pop();
    if (last) scrubToSnap(last);
    else scrubTo(page.model.t1, null);
    startFeed();
  }, fail("the history"));

  function summarize() {
    const { tries } = page;
    const keys = page.model.lanes.filter((l) => l.id !== SCOPE_LANE).length;
    summary.textContent =
      `${page.events.length} events · ${keys} keys · ` +
      (tries.length ? `tries ${tries.map((t) => t.try_number).join(", ")}` : "no tries recorded") +
      (page.compactedBefore ? ` · compaction removed the history before seq ${page.compactedBefore}` : "");
  }

  // ------------------------------------------------------------------ live updates

  // New events of the scope arrive through the live feed and join the timeline as they commit.
  function startFeed() {
    const after = page.events.length ? page.events.at(-1).seq : 0;
    page.feed = follow(feedFilters(scope), after, {
      onEvents: (events) => {
        const lastSeq = page.events.length ? page.events.at(-1).seq : 0;
        const fresh = events.filter((e) => e.seq > lastSeq && sameScope(scope, e));
        if (!fresh.length || page.disposed) return;
        page.events.push(...fresh);
        scheduleRefresh();
      },
      onStatus: (text) => {
        live.textContent = text === "live" ? "● live" : "○ reconnecting…";
        live.dataset.status = text;
      },
      onError: (error) => {
        live.textContent = "";
        live.dataset.status = "off";
        onAuthError(error);
      },
    });
  }

  let refreshTimer = 0;
  function scheduleRefresh() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(refresh, 150);
  }

  async function refresh() {
    if (page.disposed) return;
    let tries = page.tries;
    try {
      tries = await api.tries(scope);
    } catch (error) {
      if (onAuthError(error)) return;
    }
    if (page.disposed) return;
    const wasWhole = page.window.from === page.bounds.from && page.window.to === page.bounds.to;
    const atEnd = page.scrubTime !== null && page.scrubTime >= page.model.t1;
    page.tries = tries;
    page.model = buildModel(page.events);
    page.bounds = fullWindow(page.model, tries);
    if (wasWhole) page.window = { ...page.bounds };
    page.snaps = snapPoints(tries);
    summarize();
    renderSnaps();
    draw();
    if (atEnd) scrubTo(page.model.t1, null);
  }

  // ------------------------------------------------------------------ rewind

  // "Rewind to here": the diff a rewind would apply (a dry run), then, once confirmed, the
  // rewind itself, conditional on the version the dry run saw. Admin tokens only.
  async function rewindTo(point, label) {
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

  // ------------------------------------------------------------------ timeline

  function draw() {
    if (!page.model) return;
    const width = Math.max(280, box.clientWidth || 800);
    const gutter = width < 600 ? 92 : 150;
    const plot = width - gutter - 8;
    const lanes = [];
    let y = TOP;
    for (const lane of page.model.lanes) {
      const series = [...lane.series].slice(0, MAX_SERIES);
      const height = MARK_ROW + series.length * SERIES_ROW;
      lanes.push({ lane, y, height, series });
      y += height;
    }
    const height = Math.max(y, TOP + MARK_ROW) + AXIS;
    page.layout = { width, gutter, plot, lanes, height };
    const win = page.window;
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
    tryBands(page.tries).forEach((band, n) => {
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
    const events = page.model.events;
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
    if (page.scrubTime !== null) {
      const cx = x(page.scrubTime);
      svg.append(s("line", { class: "cursor", id: "cursor", x1: cx, x2: cx, y1: TOP - 8, y2: height - AXIS }));
    }
    if (page.selected !== null) {
      const event = events[page.selected];
      const row = lanes.find((r) => r.lane.events.includes(page.selected));
      if (row && event.t >= win.from && event.t <= win.to) {
        svg.append(s("circle", { class: "selected", cx: x(event.t), cy: row.y + MARK_ROW / 2, r: 7 }));
      }
    }
    svg.addEventListener("click", onTimelineClick);
    box.replaceChildren(svg);
  }

  function onTimelineClick(event) {
    const layout = page.layout;
    const rect = event.currentTarget.getBoundingClientRect();
    const px = ((event.clientX - rect.left) / rect.width) * layout.width;
    const py = ((event.clientY - rect.top) / rect.height) * layout.height;
    if (px < layout.gutter) return;
    const t = timeAt(px - layout.gutter, page.window, layout.plot);
    const row = layout.lanes.find((r) => py >= r.y && py < r.y + MARK_ROW);
    if (row) {
      const nearest = nearestEvent(row.lane.events, t, (8 * (page.window.to - page.window.from)) / layout.plot);
      if (nearest !== null) {
        select(nearest);
        return;
      }
    }
    scrubTo(t, snapTo(t, page.snaps, (6 * (page.window.to - page.window.from)) / layout.plot));
  }

  function nearestEvent(indices, t, tolerance) {
    let best = null;
    for (const index of indices) {
      const d = Math.abs(page.model.events[index].t - t);
      if (d <= tolerance && (best === null || d <= Math.abs(page.model.events[best].t - t))) best = index;
    }
    return best;
  }

  function setWindow(factor) {
    if (!page.model) return;
    if (factor === 0) page.window = { ...page.bounds };
    else {
      const center = page.scrubTime ?? (page.window.from + page.window.to) / 2;
      page.window = zoomWindow(page.window, center, factor, page.bounds);
    }
    draw();
  }

  function pan(fraction) {
    if (!page.model) return;
    const span = page.window.to - page.window.from;
    let from = page.window.from + span * fraction;
    from = Math.max(page.bounds.from, Math.min(page.bounds.to - span, from));
    page.window = { from, to: from + span };
    draw();
  }

  box.addEventListener("keydown", (event) => {
    const count = page.model?.events.length ?? 0;
    if (!count) return;
    const at = page.selected;
    const moves = {
      ArrowRight: at === null ? 0 : Math.min(count - 1, at + 1),
      ArrowLeft: at === null ? count - 1 : Math.max(0, at - 1),
      Home: 0,
      End: count - 1,
    };
    if (!(event.key in moves)) return;
    event.preventDefault();
    select(moves[event.key]);
  });

  let resizeFrame = 0;
  const observer = new ResizeObserver(() => {
    cancelAnimationFrame(resizeFrame);
    resizeFrame = requestAnimationFrame(draw);
  });
  observer.observe(box);

  // ------------------------------------------------------------------ scrubber and state

  function renderSnaps() {
    clear(snaps);
    if (!page.snaps.length) return;
    snaps.append(h("span", { class: "muted" }, "Snap to:"));
    for (const snap of page.snaps) {
      snaps.append(h("button", { type: "button", class: "snap", onclick: () => scrubToSnap(snap) }, snap.label));
    }
  }

  function sliderTime(value) {
    return page.bounds.from + (value / SCRUB_STEPS) * (page.bounds.to - page.bounds.from);
  }

  function sliderValue(t) {
    return Math.round(((t - page.bounds.from) / (page.bounds.to - page.bounds.from)) * SCRUB_STEPS);
  }

  scrub.addEventListener("input", () => {
    if (!page.model) return;
    const t = sliderTime(Number(scrub.value));
    const tolerance = (page.bounds.to - page.bounds.from) * 0.012;
    scrubTo(t, snapTo(t, page.snaps, tolerance));
  });

  function scrubToSnap(snap) {
    scrubTo(snap.t, snap);
  }

  let stateTimer = 0;
  let stateRequest = 0;

  function scrubTo(t, snap) {
    page.scrubTime = snap ? snap.t : t;
    page.scrubPoint = snap ? snap.point : { at: new Date(t).toISOString() };
    scrub.value = String(sliderValue(page.scrubTime));
    scrubLabel.textContent = snap ? `${snap.label} (${timeText(snap.t)})` : timeText(t);
    const cursor = box.querySelector("#cursor");
    if (cursor && page.layout) {
      const cx = page.layout.gutter + xOf(page.scrubTime, page.window, page.layout.plot);
      cursor.setAttribute("x1", cx);
      cursor.setAttribute("x2", cx);
    } else draw();
    clearTimeout(stateTimer);
    stateTimer = setTimeout(loadState, 120);
  }

  async function loadState() {
    const point = page.scrubPoint;
    const mine = ++stateRequest;
    stateTitle.textContent = `State as of ${pointLabel(point)}`;
    stateBody.setAttribute("aria-busy", "true");
    try {
      const { state, at } = await api.stateAt(scope, point);
      if (mine !== stateRequest || page.disposed) return;
      const entries = Object.entries(state);
      const where = at ?? "";
      stateBody.replaceChildren(
        h("p", { class: "muted", id: "state-where" }, where),
        entries.length
          ? h(
              "table",
              {},
              h("tbody", {}, entries.map(([key, value]) =>
                h("tr", { "data-key": key }, h("td", {}, key), h("td", { class: "value", title: formatValue(value, 4000) }, formatValue(value, 200))),
              )),
            )
          : h("p", { class: "muted" }, "(no live keys)"),
      );
      stateBody.dataset.point = JSON.stringify(point);
    } catch (error) {
      if (mine !== stateRequest || page.disposed || onAuthError(error)) return;
      stateBody.replaceChildren(h("p", { class: "error" }, error.message));
    } finally {
      if (mine === stateRequest) stateBody.removeAttribute("aria-busy");
    }
  }

  // ------------------------------------------------------------------ the selected event

  function select(index) {
    page.selected = index;
    const events = page.model.events;
    const event = events[index];
    const change = changeFromPrevious(events, index);
    const sameKey = (n) => events[n].key === event.key;
    const step = (direction) => {
      for (let n = index + direction; n >= 0 && n < events.length; n += direction) {
        if (sameKey(n)) return select(n);
      }
      return undefined;
    };
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
    const changeView = h("div", { id: "event-change" }, h("h2", {}, "Change from the previous value"), h("p", {}, change.summary));
    if (change.beforeEvent) {
      changeView.append(
        h("p", { class: "muted" }, `previous: ${change.beforeEvent.kind} at seq ${change.beforeEvent.seq}` +
          (change.beforeEvent.try_number != null ? `, try ${change.beforeEvent.try_number}` : "")),
      );
    }
    if (change.fields.length && !(change.fields.length === 1 && change.fields[0].path === "")) {
      changeView.append(fieldTable(change.fields));
    } else if (change.before !== undefined || event.kind === "delete") {
      changeView.append(
        h("p", { class: "mono" }, `${formatValue(change.before, 300)} → ${event.kind === "set" ? formatValue(event.value, 300) : "(deleted)"}`),
      );
    }
    eventPanel.replaceChildren(
      h(
        "div",
        { class: "toolbar" },
        h("h2", {}, `Event seq ${event.seq}`),
        h("button", { type: "button", onclick: () => step(-1), "aria-label": "previous event of this key" }, "◀ previous"),
        h("button", { type: "button", onclick: () => step(1), "aria-label": "next event of this key" }, "next ▶"),
        h("button", { type: "button", onclick: () => scrubTo(event.t, { t: event.t, label: `seq ${event.seq}`, point: { seq: event.seq } }) }, "state here"),
        h("button", { type: "button", id: "rewind-here", onclick: () => rewindTo({ seq: event.seq }, `seq ${event.seq}`) }, "rewind to here"),
      ),
      h("dl", { class: "event" }, details.map(([name, value]) => [h("dt", {}, name), h("dd", { "data-field": name }, value)])),
      changeView,
    );
    draw();
  }

  // ------------------------------------------------------------------ diff

  function renderDiffPanel() {
    const pointInputs = (prefix, initial) => {
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
    };
    const numbers = page.tries.map((t) => t.try_number);
    const events = page.model.events;
    let initial;
    if (numbers.length > 1) initial = [{ end_of_try: numbers.at(-2) }, { end_of_try: numbers.at(-1) }];
    else if (numbers.length === 1) initial = [{ start_of_try: numbers[0] }, { end_of_try: numbers[0] }];
    else initial = [{ version: 0 }, { version: events.length ? events.at(-1).version : 0 }];
    const from = pointInputs("from", initial[0]);
    const to = pointInputs("to", initial[1]);
    const result = h("div", { id: "diff-result" });
    const run = async (a, b) => {
      result.replaceChildren(h("p", { class: "muted" }, "Comparing…"));
      try {
        const body = await api.diff(scope, a, b);
        if (page.disposed) return;
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
    diffPanel.replaceChildren(
      h("h2", {}, "Compare two points"),
      h("div", { class: "quick", id: "quick-diffs" }, tryComparisons(page.tries).map((c) =>
        h("button", { type: "button", onclick: () => run(c.from, c.to) }, c.label),
      )),
      form,
      result,
    );
  }

  return {
    dispose() {
      page.disposed = true;
      observer.disconnect();
      clearTimeout(stateTimer);
      clearTimeout(refreshTimer);
      page.feed?.close();
    },
  };
}

// -------------------------------------------------------------------- drawing helpers

/** An event's value as text; a masked (sensitive) or erased value says so instead of "null". */
function shownValue(event) {
  if (event.erased) return "(erased with its scope)";
  if (event.sensitive && event.value === null) return "(sensitive: masked for this token)";
  return JSON.stringify(event.value, null, 2);
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

function legend() {
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

function fieldTable(fields) {
  return h(
    "table",
    { class: "changes" },
    h("tbody", {}, fields.map((f) =>
      h(
        "tr",
        { class: `chg-${f.change}` },
        h("td", { class: "mono" }, f.path || "(value)"),
        h("td", { class: "value" }, formatValue(f.old, 200)),
        h("td", {}, "→"),
        h("td", { class: "value" }, formatValue(f.new, 200)),
      ),
    )),
  );
}

function diffTable(rows) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "diff-table" },
      h("thead", {}, h("tr", {}, h("th", {}, ""), h("th", {}, "key"), h("th", {}, "before"), h("th", {}, "after"))),
      h("tbody", {}, rows.map((row) =>
        h(
          "tr",
          { class: `chg-${row.change}`, "data-key": row.key, "data-change": row.change },
          h("td", {}, row.change),
          h("td", { class: "mono" }, row.key),
          h("td", { class: "value" }, row.change === "added" ? "—" : formatValue(row.old, 300)),
          h(
            "td",
            { class: "value" },
            row.change === "removed" ? "—" : formatValue(row.new, 300),
            row.fields.length > 1 || (row.fields.length === 1 && row.fields[0].path)
              ? fieldTable(row.fields)
              : null,
          ),
        ),
      )),
    ),
  );
}
