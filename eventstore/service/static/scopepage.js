// One scope's page: loads the history, follows the live feed, and wires the views together: the
// timeline (timelineview.js), the scrubber and the state beside it, the selected event
// (eventview.js), the diff between two points (diffpanel.js) and the rewind dialog.

import * as api from "./api.js";
import { formatValue, pointLabel } from "./diff.js";
import { renderDiffPanel } from "./diffpanel.js";
import { clear, h, timeText } from "./dom.js";
import { renderEvent } from "./eventview.js";
import { scopeTitle } from "./links.js";
import { feedFilters, follow, sameScope } from "./live.js";
import { rewindDialog } from "./rewinddialog.js";
import { SCOPE_LANE, buildModel, fullWindow, snapPoints, snapTo, zoomWindow } from "./timeline.js";
import { cursorX, drawTimeline, hit, legend } from "./timelineview.js";

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
    showDiffPanel();
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

  function rewindTo(point, label) {
    return rewindDialog(main, scope, point, label);
  }

  // ------------------------------------------------------------------ timeline

  function draw() {
    if (!page.model) return;
    const width = Math.max(280, box.clientWidth || 800);
    const { svg, layout } = drawTimeline(page, width);
    page.layout = layout;
    svg.addEventListener("click", onTimelineClick);
    box.replaceChildren(svg);
  }

  function onTimelineClick(event) {
    const layout = page.layout;
    const rect = event.currentTarget.getBoundingClientRect();
    const px = ((event.clientX - rect.left) / rect.width) * layout.width;
    const py = ((event.clientY - rect.top) / rect.height) * layout.height;
    const target = hit(layout, page.window, page.model.events, px, py);
    if (target === null) return;
    if (target.index !== null) {
      select(target.index);
      return;
    }
    scrubTo(target.t, snapTo(target.t, page.snaps, (6 * (page.window.to - page.window.from)) / layout.plot));
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
      const cx = cursorX(page.layout, page.window, page.scrubTime);
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
    renderEvent(eventPanel, page.model.events, index, {
      select,
      stateHere: (event) => scrubTo(event.t, { t: event.t, label: `seq ${event.seq}`, point: { seq: event.seq } }),
      rewindHere: (event) => rewindTo({ seq: event.seq }, `seq ${event.seq}`),
    });
    draw();
  }

  // ------------------------------------------------------------------ diff

  function showDiffPanel() {
    renderDiffPanel(diffPanel, scope, page.tries, page.model.events, {
      isDisposed: () => page.disposed,
      onAuthError,
    });
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
