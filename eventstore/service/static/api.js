// The service's read-only routes, as the page uses them. Every request goes to the page's own
// origin with the bearer token; nothing else is ever fetched.
//
// `site` says where the routes are and how a request proves who asks. The defaults serve this
// service's own page: routes at the origin's root, the pasted bearer token, no cookies. A page
// embedded in another site (Airflow's History tab, eventstore/airflow/history.py) puts the routes
// under its prefix and authenticates with that site's own session cookie instead.
export const site = { base: "", credentials: "omit" };

const TOKEN_KEY = "tasktrail.token";

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.message ?? `the service answered ${status}`);
    this.status = status;
    this.reason = body?.reason ?? "error";
    this.detail = body?.detail ?? null;
  }
}

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
  forget: () => sessionStorage.removeItem(TOKEN_KEY),
};

/** The path of a scope's routes: /api/v1/tasks/D/R/T/M, /api/v1/assets/by-name/N or by-uri. */
export function scopePath(scope, sub = "") {
  const e = encodeURIComponent;
  if (scope.scope === "task") {
    return {
      path: `/api/v1/tasks/${e(scope.dag_id)}/${e(scope.run_id)}/${e(scope.task_id)}/${scope.map_index ?? -1}${sub}`,
      params: {},
    };
  }
  if (scope.name) {
    return {
      path: `/api/v1/assets/by-name/${e(scope.name)}${sub}`,
      params: scope.uri ? { uri: scope.uri } : {},
    };
  }
  return { path: `/api/v1/assets/by-uri${sub}`, params: { uri: scope.uri } };
}

export function urlOf(path, params = {}) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") query.set(name, String(value));
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

export async function getJSON(path, params = {}, bearer = token.get()) {
  const headers = { Accept: "application/json" };
  if (site.credentials === "omit") headers.Authorization = `Bearer ${bearer ?? ""}`;
  const response = await fetch(site.base + urlOf(path, params), {
    headers,
    credentials: site.credentials,
    cache: "no-store",
  });
  return answerOf(response);
}

/** The JSON a response carries (null: none); an ApiError when it is not a success. */
async function answerOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}


export async function listScopes(filters, after, bearer = token.get()) {
  return getJSON("/api/v1/scopes", { ...filters, after }, bearer);
}

/**
 * Every event of a scope the log still holds, oldest first, read page by page; `progress(n)`
 * after each page. When compaction removed the oldest events, reading starts at the earliest
 * position still answerable, which is returned as `compactedBefore` (else null).
 */
export async function allEvents(scope, progress = () => {}, pageSize = 1000) {
  const { path, params } = scopePath(scope, "/history");
  const events = [];
  let after = null;
  let compactedBefore = null;
  for (;;) {
    let body;
    try {
      body = await getJSON(path, { ...params, limit: pageSize, after_seq: after });
    } catch (error) {
      const earliest = error?.detail?.earliest_seq;
      if (error instanceof ApiError && error.reason === "history_compacted" && earliest > 0 && after === null) {
        compactedBefore = earliest;
        after = earliest - 1;
        continue;
      }
      throw error;
    }
    events.push(...body.events);
    progress(events.length);
    if (body.next_after_seq === null || body.next_after_seq === undefined) break;
    after = body.next_after_seq;
  }
  return { events, compactedBefore };
}

export async function tries(scope) {
  const { path, params } = scopePath(scope, "/tries");
  return (await getJSON(path, params)).tries;
}

/** The state as of a point ({seq: N}, {at: ISO}, {end_of_try: N}, ...): {at, state}. */
export async function stateAt(scope, point) {
  const { path, params } = scopePath(scope, "/state");
  return getJSON(path, { ...params, ...point });
}

/** The diff between two points: {from, to, added, removed, changed: {key: [old, new]}}. */
export async function diff(scope, from, to) {
  const { path, params } = scopePath(scope, "/diff");
  const query = { ...params };
  for (const [name, value] of Object.entries(from)) query[`from_${name}`] = value;
  for (const [name, value] of Object.entries(to)) query[`to_${name}`] = value;
  return getJSON(path, query);
}

/**
 * Rewind a scope to a point ({seq: N}, {end_of_try: N}, ...; admins only). With dryRun the
 * answer is the diff it would apply and nothing is written; expectedVersion makes it
 * conditional (409 if the scope moved since). Answers {point, rewound_to, version, set,
 * deleted, added, removed, changed, dry_run}.
 */
export async function rewind(scope, point, { dryRun = false, expectedVersion = null } = {}, bearer = token.get()) {
  const { path, params } = scopePath(scope, "/store:rewind");
  const body = { dry_run: dryRun };
  for (const [name, value] of Object.entries(point)) {
    body[name] = name === "at" ? value : Number(value);
  }
  const headers = {
    Authorization: `Bearer ${bearer ?? ""}`,
    Accept: "application/json",
    "Content-Type": "application/json",
  };
  if (expectedVersion !== null) headers["If-Match"] = `"${expectedVersion}"`;
  const response = await fetch(site.base + urlOf(path, params), {
    method: "POST",
    headers,
    body: JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
  });
  return answerOf(response);
}
