"use strict";
// One evaluation (or two, compared): rows filtered by the search box, sorted by a column, shown a page at a time.
const D = JSON.parse(document.getElementById("data").textContent);
const PER_PAGE = 50;
const SCORE_KEYS = ["CIDEr", "Bleu_4"].filter((k) => D.rows.length && k in D.rows[0].scores);
const HAS_REFS = D.rows.some((r) => r.refs.length);
const LABELS = { caption: "caption", refs: "references", ...(D.labels || {}) };
const view = { key: D.compare ? "diff" : SCORE_KEYS.length ? "CIDEr" : null, asc: !D.compare, page: 0, query: "" };

function value(row, key) {
  if (key === "diff") return row.diff;
  if (key.startsWith("b:")) return row.b_scores[key.slice(2)];
  return row.scores[key];
}

function columns() {
  const cols = [["image", null], [D.compare ? "A: caption" : LABELS.caption, null]];
  if (D.compare) cols.push(["B: caption", null]);
  if (HAS_REFS) cols.push([LABELS.refs, null]);
  for (const k of SCORE_KEYS) cols.push([D.compare ? "A: " + k : k, k]);
  if (D.compare) cols.push(["B: CIDEr", "b:CIDEr"], ["B - A (CIDEr)", "diff"]);
  return cols;
}

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function caption(row, text, wrong, withAttention) {
  const cell = el("td");
  text.split(" ").forEach((word, i) => {
    const cls = ["w"];
    if (wrong.includes(word.toLowerCase())) cls.push("bad");
    if (withAttention && row.attention && i < row.attention.length) cls.push("att");
    const span = el("span", { class: cls.join(" "), "data-word": i }, word);
    cell.append(span, " ");
  });
  if (row.count && !D.compare) cell.append(el("div", { class: "sentinel" }, `says ${row.count.said} objects, there are ${row.count.true}`));
  return cell;
}

function showAttention(tr, row, i) {
  // where the model looked for word i: its attention grid over the thumbnail
  const canvas = tr.querySelector("canvas");
  const ctx = canvas.getContext("2d");
  const g = row.grid, w = row.attention[i], side = canvas.width / g;
  const top = Math.max(...w);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = "rgba(0,0,0,0.45)";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  for (let r = 0; r < g; r++) for (let c = 0; c < g; c++) {
    ctx.clearRect(c * side, r * side, side, side);
    ctx.fillStyle = `rgba(0,0,0,${0.75 * (1 - w[r * g + c] / top)})`;
    ctx.fillRect(c * side, r * side, side, side);
  }
  tr.querySelectorAll(".w.on").forEach((s) => s.classList.remove("on"));
  tr.querySelector(`.w[data-word="${i}"]`).classList.add("on");
  const note = tr.querySelector(".sentinel.look");
  if (note) note.textContent = row.sentinel ? `looked at the image: ${(1 - row.sentinel[i]).toFixed(2)}` : "";
}

function rowElement(row) {
  const tr = el("tr", { "data-id": String(row.id) });
  const img = el("td");
  const box = el("div", { class: "thumb" });
  if (row.thumb) box.append(el("img", { src: row.thumb, alt: String(row.id) }));
  box.append(el("canvas", { width: 112, height: 112 }));
  img.append(box, el("div", { class: "sentinel look" }));
  tr.append(img, caption(row, row.caption, row.wrong, true));
  if (D.compare) tr.append(caption(row, row.b_caption, row.b_wrong, false));
  if (HAS_REFS) {
    const refs = el("td");
    const ol = el("ol", { class: "refs" });
    row.refs.forEach((r) => ol.append(el("li", {}, r)));
    refs.append(ol);
    tr.append(refs);
  }
  for (const [, key] of columns().filter(([, k]) => k)) {
    const v = value(row, key);
    const td = el("td", { class: "num" + (key === "diff" ? (v > 0 ? " pos" : v < 0 ? " neg" : "") : "") });
    td.textContent = v === undefined ? "" : (key === "diff" && v > 0 ? "+" : "") + v.toFixed(3);
    tr.append(td);
  }
  tr.querySelectorAll(".w.att").forEach((s) => s.addEventListener("click", () => showAttention(tr, row, +s.dataset.word)));
  return tr;
}

function render() {
  const q = view.query.toLowerCase();
  const shown = D.rows.filter((r) => !q || [r.caption, r.b_caption || "", ...r.refs].some((t) => t.toLowerCase().includes(q)));
  if (view.key) shown.sort((a, b) => (view.asc ? 1 : -1) * (value(a, view.key) - value(b, view.key)));
  const pages = Math.max(1, Math.ceil(shown.length / PER_PAGE));
  view.page = Math.min(view.page, pages - 1);
  const body = document.getElementById("body");
  body.replaceChildren(...shown.slice(view.page * PER_PAGE, (view.page + 1) * PER_PAGE).map(rowElement));
  document.getElementById("count").textContent = `${shown.length} of ${D.rows.length} images`;
  document.getElementById("page").textContent = `page ${view.page + 1} of ${pages}`;
  document.getElementById("prev").disabled = view.page === 0;
  document.getElementById("next").disabled = view.page >= pages - 1;
  document.querySelectorAll("th[data-key]").forEach((th) => th.classList.toggle("sorted", th.dataset.key === view.key));
}

function header() {
  const tr = el("tr");
  for (const [name, key] of columns()) {
    const th = el("th", key ? { "data-key": key } : {}, name);
    if (key) th.addEventListener("click", () => {
      view.asc = view.key === key ? !view.asc : true;
      view.key = key;
      view.page = 0;
      render();
    });
    tr.append(th);
  }
  document.getElementById("head").replaceChildren(tr);
}

document.getElementById("search").addEventListener("input", (e) => { view.query = e.target.value; view.page = 0; render(); });
document.getElementById("prev").addEventListener("click", () => { view.page -= 1; render(); });
document.getElementById("next").addEventListener("click", () => { view.page += 1; render(); });
const LOOK = D.rows.some((r) => r.attention) ? " Dotted words: click to see where the model looked." : "";
document.getElementById("hint").textContent = (D.compare
  ? "Sorted by how much B beat A on CIDEr-D (click a column to sort by it); red words: attributes the caption gets wrong."
  : view.key ? "Worst CIDEr-D first (click a column to sort by it); red words: attributes the caption gets wrong." : "") + LOOK;
header();
render();
