// The live feed's pieces: the SSE parser, the feed filters of a scope, and rewind's request.
import assert from "node:assert/strict";
import { afterEach, beforeEach, test } from "node:test";

import { rewind } from "../../eventstore/service/static/api.js";
import { feedFilters, sameScope, sseParser } from "../../eventstore/service/static/live.js";

test("the parser completes messages across chunks, with ids, comments and id-only messages", () => {
  const parser = sseParser();
  assert.deepEqual(parser.push("retry: 1000\n\nid: 4\nda"), []);
  assert.deepEqual(parser.push('ta: {"seq": 4}\n\n: keep-alive\n\nid: 9\n\nid: 10\r\ndata: a\ndata: b\n'), [
    { id: "4", data: '{"seq": 4}' },
    { id: "9", data: null },
  ]);
  assert.deepEqual(parser.push("\n"), [{ id: "10", data: "a\nb" }]);
});

test("a task page follows its own task instance; an asset page keeps its own asset", () => {
  const task = { scope: "task", dag_id: "d", run_id: "r", task_id: "t", map_index: 2 };
  assert.deepEqual(feedFilters(task), { dag: "d", run: "r", task: "t", map_index: 2 });
  assert.ok(sameScope(task, { scope: { ...task } }));
  assert.ok(!sameScope(task, { scope: { ...task, map_index: 3 } }));
  const asset = { scope: "asset", name: "orders", uri: null };
  assert.deepEqual(feedFilters(asset), { kind: "asset" });
  assert.ok(sameScope(asset, { scope: { scope: "asset", name: "orders", uri: null } }));
  assert.ok(!sameScope(asset, { scope: { scope: "asset", name: "other", uri: null } }));
});

let requests;
beforeEach(() => {
  requests = [];
  const store = new Map([["tasktrail.token", "tt1.x.y"]]);
  globalThis.sessionStorage = { getItem: (k) => store.get(k) ?? null };
  globalThis.fetch = async (url, init) => {
    requests.push({ url, init });
    if (init.headers["If-Match"] === '"3"') {
      return { ok: false, status: 409, json: async () => ({ reason: "version_conflict", message: "moved" }) };
    }
    return { ok: true, status: 200, json: async () => ({ version: 5, set: ["k"], deleted: [] }) };
  };
});
afterEach(() => {
  delete globalThis.fetch;
  delete globalThis.sessionStorage;
});

test("rewind posts the point, the dry run flag and If-Match with the bearer token", async () => {
  const scope = { scope: "task", dag_id: "d/x", run_id: "r", task_id: "t", map_index: -1 };
  const answer = await rewind(scope, { seq: "12" }, { dryRun: true });
  assert.equal(answer.version, 5);
  assert.equal(requests[0].url, "/api/v1/tasks/d%2Fx/r/t/-1/store:rewind");
  assert.equal(requests[0].init.method, "POST");
  assert.deepEqual(JSON.parse(requests[0].init.body), { dry_run: true, seq: 12 });
  assert.equal(requests[0].init.headers.Authorization, "Bearer tt1.x.y");
  await assert.rejects(rewind(scope, { end_of_try: 1 }, { expectedVersion: 3 }), {
    status: 409,
    reason: "version_conflict",
  });
  assert.equal(requests[1].init.headers["If-Match"], '"3"');
});
