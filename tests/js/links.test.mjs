// The page's hash routes and the service paths of a scope.
import assert from "node:assert/strict";
import { test } from "node:test";

import { scopePath, urlOf } from "../../eventstore/service/static/api.js";
import { parseHash, scopeHash, scopeTitle } from "../../eventstore/service/static/links.js";

const task = { scope: "task", dag_id: "etl orders", run_id: "manual__2026-03-01T12:00:00+00:00", task_id: "load#1?x", map_index: 3 };

test("a task scope's hash reads back as the same scope, whatever its ids hold", () => {
  const hash = scopeHash(task);
  assert.ok(hash.startsWith("#/task/etl%20orders/manual__2026-03-01T12%3A00%3A00%2B00%3A00/"));
  assert.deepEqual(parseHash(hash), { page: "scope", scope: task });
});

test("an asset scope's hash reads back with its name and uri", () => {
  const both = { scope: "asset", name: "warehouse.orders", uri: "s3://b/k?v=1&w=2" };
  assert.deepEqual(parseHash(scopeHash(both)), { page: "scope", scope: both });
  const named = { scope: "asset", name: "orders", uri: null };
  assert.deepEqual(parseHash(scopeHash(named)), { page: "scope", scope: { scope: "asset", name: "orders" } });
});

test("anything else is the start page, with the hash's query as filters", () => {
  assert.deepEqual(parseHash(""), { page: "start", filters: {} });
  assert.deepEqual(parseHash("#/?dag=etl&task=load"), { page: "start", filters: { dag: "etl", task: "load" } });
  assert.equal(parseHash("#/task/a/b/c").page, "start");
  assert.equal(parseHash("#/task/a/b/c/x").page, "start");
  assert.equal(parseHash("#/asset").page, "start");
});

test("scope titles", () => {
  assert.equal(scopeTitle({ ...task, map_index: -1 }), `etl orders / ${task.run_id} / load#1?x`);
  assert.equal(scopeTitle(task), `etl orders / ${task.run_id} / load#1?x [3]`);
  assert.equal(scopeTitle({ scope: "asset", name: "n", uri: "u" }), "asset n u");
});

test("scopePath escapes each part and routes assets by name or by uri", () => {
  assert.deepEqual(scopePath(task, "/history"), {
    path: "/api/v1/tasks/etl%20orders/manual__2026-03-01T12%3A00%3A00%2B00%3A00/load%231%3Fx/3/history",
    params: {},
  });
  assert.deepEqual(scopePath({ scope: "asset", name: "a/b", uri: null }, "/tries"), {
    path: "/api/v1/assets/by-name/a%2Fb/tries",
    params: {},
  });
  assert.deepEqual(scopePath({ scope: "asset", name: "n", uri: "s3://x" }, "/state"), {
    path: "/api/v1/assets/by-name/n/state",
    params: { uri: "s3://x" },
  });
  assert.deepEqual(scopePath({ scope: "asset", name: null, uri: "s3://x" }, "/diff"), {
    path: "/api/v1/assets/by-uri/diff",
    params: { uri: "s3://x" },
  });
});

test("urlOf leaves out empty parameters and escapes the rest", () => {
  assert.equal(urlOf("/p", { a: 1, b: undefined, c: null, d: "", e: "x y&z" }), "/p?a=1&e=x+y%26z");
  assert.equal(urlOf("/p"), "/p");
});
