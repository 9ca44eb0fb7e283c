// Reading a scope's events page by page, over a stand-in for the service.
import assert from "node:assert/strict";
import { afterEach, beforeEach, test } from "node:test";

import { ApiError, allEvents, diff, stateAt } from "../../eventstore/service/static/api.js";

const scope = { scope: "task", dag_id: "d", run_id: "r", task_id: "t", map_index: -1 };
let requests;

function serve(answer) {
  globalThis.fetch = async (url, init) => {
    requests.push({ url, init });
    const [status, body] = answer(new URL(url, "http://service"));
    return { ok: status < 400, status, json: async () => body };
  };
}

beforeEach(() => {
  requests = [];
  const store = new Map([["tasktrail.token", "tt1.x.y"]]);
  globalThis.sessionStorage = { getItem: (k) => store.get(k) ?? null };
});

afterEach(() => {
  delete globalThis.fetch;
  delete globalThis.sessionStorage;
});

const events = (from, to) => Array.from({ length: to - from + 1 }, (_, n) => ({ seq: from + n }));

test("allEvents follows next_after_seq until the last page, with the bearer token", async () => {
  serve((url) => {
    const after = Number(url.searchParams.get("after_seq") ?? 0);
    const page = events(after + 1, Math.min(after + 1000, 2500));
    return [200, { events: page, next_after_seq: page.at(-1).seq < 2500 ? page.at(-1).seq : null }];
  });
  const seen = [];
  const got = await allEvents(scope, (n) => seen.push(n));
  assert.equal(got.events.length, 2500);
  assert.equal(got.compactedBefore, null);
  assert.deepEqual(seen, [1000, 2000, 2500]);
  assert.deepEqual(
    requests.map((r) => r.url),
    [
      "/api/v1/tasks/d/r/t/-1/history?limit=1000",
      "/api/v1/tasks/d/r/t/-1/history?limit=1000&after_seq=1000",
      "/api/v1/tasks/d/r/t/-1/history?limit=1000&after_seq=2000",
    ],
  );
  assert.equal(requests[0].init.headers.Authorization, "Bearer tt1.x.y");
  assert.equal(requests[0].init.credentials, "omit");
});

test("allEvents starts at the earliest answerable position after compaction", async () => {
  serve((url) => {
    if (!url.searchParams.has("after_seq")) {
      return [410, { reason: "history_compacted", message: "compacted", detail: { question: "events", earliest_seq: 41 } }];
    }
    return [200, { events: events(41, 45), next_after_seq: null }];
  });
  const got = await allEvents(scope);
  assert.equal(got.compactedBefore, 41);
  assert.deepEqual(got.events.map((e) => e.seq), [41, 42, 43, 44, 45]);
  assert.match(requests[1].url, /after_seq=40$/);
});

test("other errors reach the caller as ApiError with the service's reason", async () => {
  serve(() => [404, { reason: "unknown_scope", message: "nothing was ever written" }]);
  await assert.rejects(allEvents(scope), (error) => {
    assert.ok(error instanceof ApiError);
    assert.equal(error.status, 404);
    assert.equal(error.reason, "unknown_scope");
    assert.equal(error.message, "nothing was ever written");
    return true;
  });
});

test("state and diff name their points as the service's query parameters", async () => {
  serve(() => [200, { at: "At.end_of_try(1)", state: {}, added: {}, removed: {}, changed: {} }]);
  await stateAt(scope, { start_of_try: 2 });
  await diff({ scope: "asset", uri: "s3://b" }, { end_of_try: 1 }, { end_of_try: 2 });
  assert.deepEqual(
    requests.map((r) => r.url),
    [
      "/api/v1/tasks/d/r/t/-1/state?start_of_try=2",
      "/api/v1/assets/by-uri/diff?uri=s3%3A%2F%2Fb&from_end_of_try=1&to_end_of_try=2",
    ],
  );
});
