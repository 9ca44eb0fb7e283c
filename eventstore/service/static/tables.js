// Tables of changes: the keys a diff adds, removes and changes, and the fields of one value.

import { formatValue } from "./diff.js";
import { h } from "./dom.js";

export function fieldTable(fields) {
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

export function diffTable(rows) {
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
