// Where a scope's page lives: the page's own hash routes, and a scope's title. No DOM.

/** The hash of a scope's page: #/task/D/R/T/M or #/asset?name=N&uri=U. */
export function scopeHash(scope) {
  const e = encodeURIComponent;
  if (scope.scope === "task") {
    return `#/task/${e(scope.dag_id)}/${e(scope.run_id)}/${e(scope.task_id)}/${scope.map_index ?? -1}`;
  }
  const params = new URLSearchParams();
  if (scope.name) params.set("name", scope.name);
  if (scope.uri) params.set("uri", scope.uri);
  return `#/asset?${params}`;
}

/** #/task/D/R/T/M -> a task scope; #/asset?name=..&uri=.. -> an asset scope; else the start
 *  page with the hash's query as its filters. */
export function parseHash(hash) {
  const text = hash.replace(/^#/, "");
  const mark = text.indexOf("?");
  const path = mark === -1 ? text : text.slice(0, mark);
  const params = Object.fromEntries(new URLSearchParams(mark === -1 ? "" : text.slice(mark + 1)));
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "task" && parts.length === 5 && /^-?\d+$/.test(parts[4])) {
    return {
      page: "scope",
      scope: { scope: "task", dag_id: parts[1], run_id: parts[2], task_id: parts[3], map_index: Number(parts[4]) },
    };
  }
  if (parts[0] === "asset" && parts.length === 1 && (params.name || params.uri)) {
    const scope = { scope: "asset" };
    if (params.name) scope.name = params.name;
    if (params.uri) scope.uri = params.uri;
    return { page: "scope", scope };
  }
  return { page: "start", filters: params };
}

export function scopeTitle(scope) {
  if (scope.scope === "task") {
    const index = scope.map_index === -1 ? "" : ` [${scope.map_index}]`;
    return `${scope.dag_id} / ${scope.run_id} / ${scope.task_id}${index}`;
  }
  return `asset ${[scope.name, scope.uri].filter(Boolean).join(" ")}`;
}
