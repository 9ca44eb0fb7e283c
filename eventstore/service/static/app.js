// The page: asks for a token once (kept in sessionStorage for this tab), then routes on the
// hash: #/ lists scopes, #/task/D/R/T/M and #/asset?name=N&uri=U show one scope's history.

import { ApiError, listScopes, token } from "./api.js";
import { clear, h } from "./dom.js";
import { parseHash } from "./links.js";
import { renderScopePage } from "./scopepage.js";
import { renderStart } from "./startpage.js";

const main = document.getElementById("main");
const crumb = document.getElementById("crumb");
const forget = document.getElementById("forget");
const dialog = document.getElementById("token-dialog");
const form = document.getElementById("token-form");
const input = document.getElementById("token-input");
const tokenError = document.getElementById("token-error");

let current = null; // the page on screen: {dispose()}

function askForToken(message = "") {
  tokenError.textContent = message;
  input.value = "";
  if (!dialog.open) dialog.showModal();
  input.focus();
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const value = input.value.trim();
  if (!value) return;
  try {
    await listScopes({ limit: 1 }, undefined, value);
  } catch (error) {
    tokenError.textContent = tokenProblem(error);
    return;
  }
  token.set(value);
  dialog.close();
  route();
});

dialog.addEventListener("cancel", (event) => event.preventDefault());

forget.addEventListener("click", () => {
  token.forget();
  route();
});

function tokenProblem(error) {
  if (error instanceof ApiError && error.status === 403) {
    return "This token may not read history: use an auditor or admin token.";
  }
  if (error instanceof ApiError && error.status === 401) return `The service refused it: ${error.message}`;
  return `Could not reach the service: ${error.message}`;
}

function route() {
  current?.dispose?.();
  current = null;
  clear(main);
  if (!token.get()) {
    forget.hidden = true;
    crumb.textContent = "";
    main.append(h("p", { class: "muted" }, "This page needs an auditor or admin token."));
    askForToken();
    return;
  }
  forget.hidden = false;
  const where = parseHash(location.hash);
  const onAuthError = (error) => {
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
      token.forget();
      askForToken(tokenProblem(error));
      return true;
    }
    return false;
  };
  if (where.page === "scope") current = renderScopePage(main, crumb, where.scope, onAuthError);
  else current = renderStart(main, crumb, where.filters, onAuthError);
}

window.addEventListener("hashchange", route);
route();
