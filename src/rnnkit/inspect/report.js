// rnnkit viz: colours the text by one hidden cell; pickers, best cells, hover predictions.
// Inlined into the page with its data (a JSON block); it loads nothing and sends nothing.
(() => {
  "use strict";
  const data = JSON.parse(document.getElementById("rnnkit-data").textContent);
  const $ = (id) => document.getElementById(id);

  function bytes(base64) {
    const raw = atob(base64);
    const out = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out;
  }

  const N = data.pieces.length;
  const K = data.top_k;
  const layers = data.layers.map((l) => ({ ...l, values: new Int8Array(bytes(l.values).buffer) }));
  const topIds = new Uint16Array(bytes(data.top_ids).buffer);
  const topProbs = bytes(data.top_probs);
  const nextProb = bytes(data.next_prob);
  const pageSize = data.page_size;
  const pages = Math.max(1, Math.ceil(N / pageSize));

  // Which features list a cell among their best: "layer:cell" -> [feature, corr].
  const tags = new Map();
  for (const group of data.best) {
    for (const c of group.cells) {
      const key = `${c.layer}:${c.cell}`;
      if (!tags.has(key)) tags.set(key, []);
      tags.get(key).push([group.feature, c.corr]);
    }
  }

  let layer = data.initial.layer;
  let cellPos = Math.max(0, layers[layer].cells.indexOf(data.initial.cell));
  let page = 0;
  let spans = [];

  const RED = [222, 80, 64];
  const BLUE = [58, 128, 201];
  function colour(q) {
    const t = Math.min(1, Math.abs(q) / 127);
    const end = q >= 0 ? RED : BLUE;
    const mix = end.map((c) => Math.round(255 + (c - 255) * t));
    return `rgb(${mix[0]},${mix[1]},${mix[2]})`;
  }

  function escapeHtml(s) {
    return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  function shown(token) {
    if (token === "\n") return "↵";
    if (token === " ") return "␣";
    if (token === "\t") return "⇥";
    return token;
  }

  function value(i) {
    const l = layers[layer];
    return l.values[cellPos * N + i] * l.scales[cellPos] / 127;
  }

  function fillCells() {
    const select = $("cell");
    select.innerHTML = "";
    layers[layer].cells.forEach((cell, pos) => {
      const option = document.createElement("option");
      const found = tags.get(`${layer}:${cell}`) || [];
      const label = found.map(([f, r]) => `${f} ${r >= 0 ? "+" : ""}${r.toFixed(2)}`).join(", ");
      option.value = String(pos);
      option.textContent = label ? `cell ${cell} · ${label}` : `cell ${cell}`;
      select.appendChild(option);
    });
    select.value = String(cellPos);
  }

  function renderPage() {
    const start = page * pageSize;
    const end = Math.min(N, start + pageSize);
    const parts = [];
    for (let i = start; i < end; i++) {
      const piece = data.pieces[i];
      if (piece === "\n") parts.push(`<span class="nl" data-i="${i}">↵</span>\n`);
      else parts.push(`<span data-i="${i}">${escapeHtml(piece)}</span>`);
    }
    $("text").innerHTML = parts.join("");
    $("text").scrollTop = 0;
    spans = $("text").querySelectorAll("span[data-i]");
    $("page-label").textContent = `page ${page + 1} of ${pages} · tokens ${start + 1}–${end} of ${N}`;
    $("page-prev").disabled = page === 0;
    $("page-next").disabled = page === pages - 1;
    recolour();
  }

  function recolour() {
    const l = layers[layer];
    const offset = cellPos * N;
    const start = page * pageSize;
    for (let j = 0; j < spans.length; j++) {
      spans[j].style.backgroundColor = colour(l.values[offset + start + j]);
    }
    const cell = l.cells[cellPos];
    const found = tags.get(`${layer}:${cell}`) || [];
    const what = found.map(([f, r]) => `${f} (r = ${r >= 0 ? "+" : ""}${r.toFixed(3)})`).join(", ");
    $("cell-info").textContent =
      `${l.name}, cell ${cell}: values from −${l.scales[cellPos].toFixed(2)} (blue) ` +
      `to +${l.scales[cellPos].toFixed(2)} (red)` + (what ? ` · best for ${what}` : "");
    document.querySelectorAll(".best").forEach((b) => {
      b.classList.toggle("current", +b.dataset.layer === layer && +b.dataset.cell === cell);
    });
  }

  function choose(newLayer, cell) {
    const pos = layers[newLayer].cells.indexOf(cell);
    if (pos < 0) return;
    const layerChanged = newLayer !== layer;
    layer = newLayer;
    cellPos = pos;
    $("layer").value = String(layer);
    if (layerChanged) fillCells();
    $("cell").value = String(cellPos);
    recolour();
  }

  function buildBest() {
    const box = $("best");
    for (const group of data.best) {
      const div = document.createElement("div");
      div.className = "feature";
      const base = group.baseline === null ? "" :
        ` <span class="base">· baseline ${(100 * group.baseline).toFixed(0)}%</span>`;
      div.innerHTML = `<h3>${escapeHtml(group.feature)}${base}</h3>`;
      for (const c of group.cells) {
        const b = document.createElement("button");
        b.className = "best";
        b.dataset.layer = String(c.layer);
        b.dataset.cell = String(c.cell);
        const sign = c.corr >= 0 ? "+" : "";
        b.innerHTML = `<span>layer ${c.layer + 1} · cell ${c.cell}</span>` +
          `<span class="r">r ${sign}${c.corr.toFixed(2)} · probe ${(100 * c.probe).toFixed(0)}%</span>`;
        b.addEventListener("click", () => choose(c.layer, c.cell));
        div.appendChild(b);
      }
      box.appendChild(div);
    }
    if (!data.best.length) box.innerHTML = '<p class="note">No feature varies on this text.</p>';
  }

  function tooltip(i, event) {
    const tip = $("tooltip");
    const rows = [];
    const actual = i + 1 < N ? data.pieces[i + 1] : null;
    let actualShown = false;
    for (let k = 0; k < K; k++) {
      const id = topIds[i * K + k];
      const p = topProbs[i * K + k] / 255;
      const token = data.vocab[id];
      const isActual = actual !== null && token === actual;
      actualShown = actualShown || isActual;
      rows.push(`<tr class="${isActual ? "actual" : ""}"><td class="tok">${escapeHtml(shown(token))}</td>` +
        `<td style="width:90px"><div class="pbar" style="width:${Math.max(2, 90 * p)}px"></div></td>` +
        `<td class="p">${p.toFixed(3)}</td></tr>`);
    }
    if (actual !== null && !actualShown) {
      rows.push(`<tr class="actual"><td class="tok">${escapeHtml(shown(actual))}</td><td>actual</td>` +
        `<td class="p">${(nextProb[i] / 255).toFixed(3)}</td></tr>`);
    }
    const v = value(i);
    tip.innerHTML =
      `<div class="head">after <span class="tok">${escapeHtml(shown(data.pieces[i]))}</span>` +
      ` · cell ${v >= 0 ? "+" : ""}${v.toFixed(3)} · next token:</div><table>${rows.join("")}</table>`;
    tip.style.display = "block";
    place(event);
  }

  function place(event) {
    const tip = $("tooltip");
    const x = Math.min(event.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
    const y = event.clientY + 18 + tip.offsetHeight > window.innerHeight
      ? event.clientY - tip.offsetHeight - 10 : event.clientY + 18;
    tip.style.left = `${x}px`;
    tip.style.top = `${y}px`;
  }

  // --- wiring -------------------------------------------------------------------------------
  layers.forEach((l, index) => {
    const option = document.createElement("option");
    option.value = String(index);
    option.textContent = `${l.name} (${l.cells.length} of ${l.size} cells)`;
    $("layer").appendChild(option);
  });
  $("layer").value = String(layer);
  $("layer").addEventListener("change", (e) => {
    layer = +e.target.value;
    cellPos = 0;
    fillCells();
    recolour();
  });
  $("cell").addEventListener("change", (e) => { cellPos = +e.target.value; recolour(); });
  $("cell-prev").addEventListener("click", () => {
    cellPos = (cellPos + layers[layer].cells.length - 1) % layers[layer].cells.length;
    $("cell").value = String(cellPos);
    recolour();
  });
  $("cell-next").addEventListener("click", () => {
    cellPos = (cellPos + 1) % layers[layer].cells.length;
    $("cell").value = String(cellPos);
    recolour();
  });
  $("page-prev").addEventListener("click", () => { page = Math.max(0, page - 1); renderPage(); });
  $("page-next").addEventListener("click", () => { page = Math.min(pages - 1, page + 1); renderPage(); });
  $("text").addEventListener("mouseover", (e) => {
    const span = e.target.closest("span[data-i]");
    if (span) tooltip(+span.dataset.i, e);
  });
  $("text").addEventListener("mousemove", (e) => { if ($("tooltip").style.display === "block") place(e); });
  $("text").addEventListener("mouseleave", () => { $("tooltip").style.display = "none"; });

  buildBest();
  fillCells();
  renderPage();
  document.body.dataset.ready = "1";
})();
