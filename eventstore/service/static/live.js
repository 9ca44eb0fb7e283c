// The live feed (GET /api/v1/events, Server-Sent Events) read with fetch, so the request can
// carry the bearer token (an EventSource cannot send headers). Reconnects by itself, resuming
// after the last position the stream named (Last-Event-ID), so no event is missed or repeated.

import { ApiError, site, token, urlOf } from "./api.js";

/**
 * An incremental parser of an SSE stream: `push(text)` takes the next chunk of text and returns
 * the messages it completed, each {id, data} (null when the message had none; data lines joined
 * with "\n"). Comments (": ...") and unknown fields are skipped.
 */
export function sseParser() {
  let buffer = "";
  let id = null;
  let data = null;
  return {
    push(text) {
      buffer += text;
      const out = [];
      let end;
      while ((end = buffer.indexOf("\n")) >= 0) {
        let line = buffer.slice(0, end);
        buffer = buffer.slice(end + 1);
        if (line.endsWith("\r")) line = line.slice(0, -1);
        if (line === "") {
          if (id !== null || data !== null) out.push({ id, data });
          id = null;
          data = null;
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "id") id = value;
        else if (field === "data") data = data === null ? value : `${data}\n${value}`;
      }
      return out;
    },
  };
}

/** The feed's query for one scope: a task instance by its parts, an asset by kind (the page
 * keeps only its own asset's events). */
export function feedFilters(scope) {
  if (scope.scope === "task") {
    return { dag: scope.dag_id, run: scope.run_id, task: scope.task_id, map_index: scope.map_index ?? -1 };
  }
  return { kind: "asset" };
}

/** Whether a feed event belongs to the page's scope. */
export function sameScope(scope, event) {
  const other = event.scope ?? {};
  if (scope.scope === "task") {
    return (
      other.scope === "task" &&
      other.dag_id === scope.dag_id &&
      other.run_id === scope.run_id &&
      other.task_id === scope.task_id &&
      (other.map_index ?? -1) === (scope.map_index ?? -1)
    );
  }
  return other.scope !== "task" && (other.name ?? null) === (scope.name ?? null) && (other.uri ?? null) === (scope.uri ?? null);
}

/**
 * Follow the feed after position `after`: `onEvents(events)` with each batch the stream
 * delivers, `onStatus("live" | "reconnecting")`, `onError(error)` once for an answer that
 * retrying cannot fix (401, 403, 422), after which it stops. Returns {close(), position}.
 */
export function follow(filters, after, { onEvents, onStatus = () => {}, onError = () => {}, retryMs = 1000 }) {
  const controller = new AbortController();
  let last = after;
  let closed = false;
  const run = async () => {
    while (!closed) {
      try {
        const headers = { Accept: "text/event-stream", "Last-Event-ID": String(last) };
        if (site.credentials === "omit") headers.Authorization = `Bearer ${token.get() ?? ""}`;
        const response = await fetch(site.base + urlOf("/api/v1/events", filters), {
          headers,
          credentials: site.credentials,
          cache: "no-store",
          signal: controller.signal,
        });
        if (!response.ok) {
          let body = null;
          try {
            body = await response.json();
          } catch {
            body = null;
          }
          throw new ApiError(response.status, body);
        }
        onStatus("live");
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        const parser = sseParser();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          const events = [];
          for (const message of parser.push(value)) {
            if (message.id !== null && /^[0-9]+$/.test(message.id)) last = Math.max(last, Number(message.id));
            if (message.data !== null) events.push(JSON.parse(message.data));
          }
          if (events.length && !closed) onEvents(events);
        }
      } catch (error) {
        if (closed) return;
        if (error instanceof ApiError && error.status < 500) {
          onError(error);
          return;
        }
      }
      if (closed) return;
      onStatus("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, retryMs));
    }
  };
  run();
  return {
    close() {
      closed = true;
      controller.abort();
    },
    get position() {
      return last;
    },
  };
}
