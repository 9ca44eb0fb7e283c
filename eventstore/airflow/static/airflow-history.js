// The History tab of a task instance in Airflow: tasktrail's scope page (scopepage.js, the same
// module the service's own page uses), reading the plugin's routes with the Airflow session.

import { ApiError, site } from "./api.js";
import { renderScopePage } from "./scopepage.js";

const root = document.documentElement;
site.base = root.dataset.base;
site.credentials = "same-origin";

const scope = JSON.parse(document.getElementById("scope").textContent);
const main = document.getElementById("main");
const crumb = document.getElementById("crumb");

renderScopePage(main, crumb, scope, (error) => {
  if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
    const status = document.getElementById("status");
    if (status) {
      status.textContent = `Airflow refused: ${error.message}. Sign in to Airflow again.`;
      status.className = "error";
    }
    return true;
  }
  return false;
});
