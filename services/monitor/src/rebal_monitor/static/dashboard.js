// Rebal dashboard: reads the monitor's REST API (docs/api.md) with the operator's bearer token and
// redraws every few seconds. The token lives in this tab's sessionStorage: typed into the sign-in form,
// or passed once as /?token=... (removed from the address bar at once). ?portfolio=P chooses the
// portfolio (default: the API's first), ?refresh=S the polling period in seconds (default 5).
"use strict";

const TOKEN_KEY = "rebal.api.token";
const params = new URLSearchParams(location.search);
const portfolio = params.get("portfolio");
const refreshSeconds = Math.max(1, Number(params.get("refresh")) || 5);
const $ = (id) => document.getElementById(id);

if (params.has("token")) {
  sessionStorage.setItem(TOKEN_KEY, params.get("token"));
  params.delete("token");
  const rest = params.toString();
  history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
}

class Unauthorised extends Error {}

async function api(path, query = {}) {
  const url = new URL(path, location.origin);
  if (portfolio) url.searchParams.set("portfolio_id", portfolio);
  for (const [key, value] of Object.entries(query)) url.searchParams.set(key, value);
  const response = await fetch(url, { headers: { Authorization: "Bearer " + sessionStorage.getItem(TOKEN_KEY) } });
  if (response.status === 401) throw new Unauthorised((await response.json()).detail);
  if (response.status === 404) return null; // nothing yet (no snapshot, no target, no plan)
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail; } catch (_) { /* not JSON */ }
    throw new Error(`${path}: ${detail} (HTTP ${response.status})`);
  }
  return response.json();
}

// -- formatting -------------------------------------------------------------------------------------
const pct = (x, digits = 2) => (x === null || x === undefined ? "-" : (Number(x) * 100).toFixed(digits) + "%");
const num = (x, digits = 2) => (x === null || x === undefined ? "-" : Number(x).toFixed(digits));
const money = (x) => (x === null || x === undefined ? "-" : Number(x).toLocaleString("en-US", { maximumFractionDigits: 2, minimumFractionDigits: 2 }));
const when = (iso) => (iso ? new Date(iso).toISOString().replace("T", " ").slice(0, 19) : "-");

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function fillTable(id, rows) {
  const body = $(id).querySelector("tbody");
  body.replaceChildren(...rows.map((cells) => {
    const tr = document.createElement("tr");
    tr.append(...cells);
    return tr;
  }));
}

// -- panels -----------------------------------------------------------------------------------------
function showStatus(status) {
  $("portfolio").textContent = status.portfolio_id;
  const trading = $("trading");
  trading.textContent = status.halted ? "HALTED" + (status.halt_reason ? ": " + status.halt_reason : "") : "trading";
  trading.className = "pill " + (status.halted ? "bad" : "ok");
  $("mode").textContent = status.mode;
}

function pieSlices(nodes) {
  const strategies = nodes.filter((n) => n.kind === "strategy");
  const holdsStrategy = (sector) => strategies.some((s) => s.path.startsWith(sector.path + "/"));
  const sectors = nodes.filter((n) => n.kind === "sector" && !holdsStrategy(n));
  const slices = nodes.filter((n) => strategies.includes(n) || sectors.includes(n));
  return slices.length ? slices : nodes;
}

function showWeights(weights) {
  if (!weights) {
    $("kpi-value").textContent = "-";
    return;
  }
  $("kpi-value").textContent = money(weights.total_value);
  // The pie, by share of the whole portfolio: the strategies and the sectors that hold no strategy
  // (cash); without strategies, the sectors; without either, every node listed.
  const slices = pieSlices(weights.nodes);
  Plotly.react("weights-chart", [{
    type: "pie", hole: 0.4, sort: false,
    labels: slices.map((n) => n.name),
    values: slices.map((n) => Number(n.actual_share)),
    customdata: slices.map((n) => pct(n.target_share)),
    hovertemplate: "%{label}: %{percent} (target %{customdata})<extra></extra>",
    textinfo: "label+percent",
  }], { margin: { t: 10, b: 10, l: 10, r: 10 }, showlegend: true }, { displayModeBar: false, responsive: true });
  // The table: every sector and strategy (without any, every node listed).
  const listed = weights.nodes.filter((n) => n.kind === "sector" || n.kind === "strategy");
  fillTable("weights-table", (listed.length ? listed : weights.nodes).map((n) => [cell(n.path), cell(pct(n.actual_share), "num"), cell(pct(n.target_share), "num")]));
}

function showPerformance(performance, equity) {
  const combined = performance && performance.combined;
  $("kpi-sharpe").textContent = combined ? num(combined.sharpe) : "-";
  $("kpi-drawdown").textContent = combined ? pct(combined.max_drawdown) : "-";
  $("kpi-return").textContent = combined ? pct(combined.cumulative_return) : "-";
  $("kpi-volatility").textContent = combined ? pct(combined.volatility) : "-";
  $("kpi-sortino").textContent = combined ? num(combined.sortino) : "-";
  fillTable("strategies-table", (performance ? performance.strategies : []).map((s) => [
    cell(s.strategy_id), cell(pct(s.cumulative_return), "num"), cell(num(s.sharpe), "num"), cell(pct(s.max_drawdown), "num"),
  ]));
  const points = equity ? equity.points : [];
  Plotly.react("equity-chart", [{
    type: "scatter", mode: "lines", name: "equity",
    x: points.map((p) => p.t), y: points.map((p) => p.equity),
    line: { color: "#2f5bd3" },
  }], {
    margin: { t: 10, b: 40, l: 50, r: 10 },
    yaxis: { title: { text: "growth of 1" } },
    annotations: points.length ? [] : [{ text: "no strategy returns yet", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5 }],
  }, { displayModeBar: false, responsive: true });
}

function showPlan(plan, diff) {
  if (!plan) {
    $("plan-summary").textContent = "no plan yet";
    fillTable("plan-orders", []);
  } else {
    $("plan-summary").textContent = `plan ${plan.plan_id} (${plan.status}), made ${when(plan.created_at)}: `
      + `${plan.orders.length} orders, ${plan.skipped.length} skipped, band ${plan.band}`;
    fillTable("plan-orders", plan.orders.map((o) => [
      cell(String(o.phase)), cell(o.account), cell(o.symbol), cell(o.side, o.side), cell(o.amount, "num"), cell(o.est_cost, "num"),
    ]));
  }
  const holder = $("diff-tree");
  holder.replaceChildren();
  if (diff) {
    const caption = document.createElement("p");
    caption.className = "tree-caption muted";
    caption.textContent = `The diff tree now: the latest snapshot against the target, band ${diff.band}`
      + (plan && plan.status === "preview" ? " (what approving the plan sells and buys, where)" : "");
    holder.append(caption);
    const list = document.createElement("ul");
    list.append(treeNode(diff.diff));
    holder.append(list);
  }
}

function treeNode(node) {
  const li = document.createElement("li");
  li.dataset.path = node.path;
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = node.name;
  const weights = document.createElement("span");
  weights.className = "weights";
  weights.textContent = `${pct(node.current_weight)} → ${pct(node.desired_weight)}`;
  const op = document.createElement("span");
  op.className = "op " + node.operation;
  const value = Number(node.diff_value);
  op.textContent = node.operation === "hold" ? "hold" : `${node.operation} ${money(Math.abs(value))}`;
  li.append(name, weights, op);
  if (node.asset) {
    const amounts = document.createElement("span");
    amounts.className = "amounts";
    amounts.textContent = `${node.asset} ${node.current_amount} → ${node.desired_amount}`;
    li.append(amounts);
  }
  if (node.children && node.children.length) {
    const list = document.createElement("ul");
    list.append(...node.children.map(treeNode));
    li.append(list);
  }
  return li;
}

function showHistory(page) {
  fillTable("history", (page ? page.runs : []).map((run) => {
    const counts = run.counts || {};
    return [
      cell(when(run.planned_at)), cell(run.run_id), cell(run.status + (run.dry_run ? " (dry-run)" : ""), "status-" + run.status),
      cell(String(counts.orders ?? 0), "num"), cell(String(counts.filled ?? 0), "num"),
      cell(String(counts.skipped ?? 0), "num"), cell(String(counts.failed ?? 0), "num"),
      cell((run.reasons || []).join("; ")),
    ];
  }));
  const rows = $("history").querySelectorAll("tbody tr");
  (page ? page.runs : []).forEach((run, i) => { rows[i].dataset.runId = run.run_id; });
}

// -- the loop ---------------------------------------------------------------------------------------
function signedIn(yes, message) {
  $("login").hidden = yes;
  $("board").hidden = !yes;
  $("sign-out").hidden = !yes;
  problem(message);
}

function problem(message) {
  $("problem").hidden = !message;
  $("problem").textContent = message || "";
}

let timer = null;
async function refresh() {
  clearTimeout(timer);
  if (!sessionStorage.getItem(TOKEN_KEY)) {
    signedIn(false);
    return;
  }
  try {
    const [status, weights, performance, equity, history, plans] = await Promise.all([
      api("/status"), api("/portfolio/weights"), api("/portfolio/performance"), api("/portfolio/equity"),
      api("/portfolio/history", { limit: 20, include_previews: false }), api("/portfolio/plans", { limit: 1 }),
    ]);
    const plan = plans && plans.plans.length ? plans.plans[0] : null;
    const diff = await api("/portfolio/trees/diff", plan ? { band: plan.band } : {});
    signedIn(true);
    showStatus(status);
    showWeights(weights);
    showPerformance(performance, equity);
    showPlan(plan, diff);
    showHistory(history);
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.loaded = String(Number(document.body.dataset.loaded || 0) + 1);
  } catch (error) {
    if (error instanceof Unauthorised) {
      sessionStorage.removeItem(TOKEN_KEY);
      signedIn(false, "The API refused the token: " + error.message);
      return;
    }
    problem("Cannot refresh: " + error.message + " (showing the last data; retrying)");
  }
  timer = setTimeout(refresh, refreshSeconds * 1000);
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  refresh();
});
$("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  clearTimeout(timer);
  signedIn(false);
});
refresh();
