// Rebal dashboard: reads the monitor's REST API (docs/api.md) with the operator's or a viewer's bearer
// token and redraws every few seconds. The token lives in this tab's sessionStorage: typed into the
// sign-in form, or passed once as /?token=... (removed from the address bar at once). ?portfolio=P chooses
// the portfolio (default: the API's first), ?refresh=S the polling period in seconds (default 5).
//
// Every figure is the API's, shown as operators read numbers: money to the valuation currency's places
// (`money_places`), amounts to their market's step, weights to two decimals of a percent. The controls
// (preview, live rebalance, approve, halt, resume) ask first, and are shown to an operator's token only
// (the API refuses them to a viewer's anyway).
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

async function call(method, path, query = {}, body = undefined) {
  const url = new URL(path, location.origin);
  if (portfolio) url.searchParams.set("portfolio_id", portfolio);
  for (const [key, value] of Object.entries(query)) url.searchParams.set(key, value);
  const headers = { Authorization: "Bearer " + sessionStorage.getItem(TOKEN_KEY) };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.status === 401) throw new Unauthorised((await response.json()).detail);
  if (response.status === 404 && method === "GET") return null; // nothing yet (no snapshot, no target)
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail; } catch (_) { /* not JSON */ }
    throw new Error(`${path}: ${detail} (HTTP ${response.status})`);
  }
  return response.json();
}
const api = (path, query) => call("GET", path, query);

// -- formatting -------------------------------------------------------------------------------------
let moneyPlaces = 2;
let valuationQuote = null;
let amountSteps = {};
const missing = (x) => x === null || x === undefined;
const pct = (x) => (missing(x) ? "-" : (Number(x) * 100).toFixed(2) + "%");
const ratio = (x) => (missing(x) ? "n/a" : Number(x).toFixed(2));
const money = (x, places = moneyPlaces) => (missing(x) ? "-" : Number(x).toLocaleString("en-US", { maximumFractionDigits: places, minimumFractionDigits: places }));
const when = (iso) => (iso ? new Date(iso).toISOString().replace("T", " ").slice(0, 19) : "-");
function decimalsOf(step) {
  const text = String(step);
  return text.includes(".") ? text.split(".")[1].replace(/0+$/, "").length : 0;
}
// An amount to its market's step, cut toward zero (what a venue can hold); the valuation currency to its
// money places; another asset without a known step to at most 8 places (a satoshi).
function amount(value, asset) {
  if (missing(value)) return "-";
  if (asset === valuationQuote) return money(value);
  const step = amountSteps[asset];
  if (!step) return Number(value).toFixed(8).replace(/\.?0+$/, "");
  const places = decimalsOf(step);
  const steps = Math.floor(Math.abs(Number(value)) / Number(step) + 1e-9);
  // Less than one step (a skipped dust sell, a remainder) is shown as it is, not as a 0.00 that cannot be true.
  if (steps === 0 && Number(value) !== 0) return Number(value).toFixed(8).replace(/\.?0+$/, "");
  return (Number(value) < 0 ? "-" : "") + (steps * Number(step)).toFixed(places);
}

// How long a strategy's figures cover: its returns' count in its frequency's unit ("953 days").
const UNITS = { daily: ["day", "days"], weekly: ["week", "weeks"], monthly: ["month", "months"] };
function span(observations, frequency) {
  if (missing(observations)) return "-";
  const unit = UNITS[frequency];
  if (unit) return `${observations} ${observations === 1 ? unit[0] : unit[1]}`;
  // "intraday (every 1 hour)", "every 3 days": the returns times their spacing.
  const every = /every (\d+(?:\.\d+)?) (minute|hour|day)s?/.exec(frequency || "");
  if (every) {
    let [count, name] = [observations * Number(every[1]), every[2]];
    if (name === "minute" && count >= 120 && count % 60 === 0) [count, name] = [count / 60, "hour"];
    if (name === "hour" && count >= 48 && count % 24 === 0) [count, name] = [count / 24, "day"];
    const text = Number.isInteger(count) ? String(count) : count.toFixed(2);
    return `${text} ${name}${text === "1" ? "" : "s"}`;
  }
  return `${observations} return${observations === 1 ? "" : "s"}`;
}

function cell(text, className, label) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  if (label) td.dataset.label = label;
  return td;
}

function fillTable(id, rows) {
  const table = $(id);
  const labels = [...table.querySelectorAll("thead th")].map((th) => th.textContent);
  table.querySelector("tbody").replaceChildren(...rows.map((cells) => {
    const tr = document.createElement("tr");
    cells.forEach((td, i) => { if (!td.dataset.label && labels[i]) td.dataset.label = labels[i]; });
    tr.append(...cells);
    return tr;
  }));
}

function fillList(id, lines) {
  $(id).replaceChildren(...lines.map((text) => {
    const li = document.createElement("li");
    li.textContent = text;
    return li;
  }));
}

// Every skip of a run with its reason: the plan's (which leg) and the executor's reasons. The run's own
// "skipped in the plan: ..." reasons repeat the skips listed (with the unstepped amount): left out.
function skipLines(run) {
  const skips = run.skips || run.skipped || [];
  const listed = new Set(skips.map((s) => s.reason));
  const repeated = (reason) => listed.has(reason) || (skips.length > 0 && reason.startsWith("skipped in the plan: "));
  return [
    ...skips.map((s) => `skipped ${s.side} ${amount(s.amount, s.symbol.split("/")[0])} ${s.symbol} at ${s.path}: ${s.reason}`),
    ...(run.reasons || []).filter((reason) => !repeated(reason)),
  ];
}

// -- panels -----------------------------------------------------------------------------------------
let session = { scope: "viewer", may_change: false };
let status = null;

function showStatus() {
  $("portfolio").textContent = status.portfolio_id;
  const trading = $("trading");
  trading.textContent = status.halted ? "HALTED" + (status.halt_reason ? ": " + status.halt_reason : "") : "trading";
  trading.className = "pill " + (status.halted ? "bad" : "ok");
  $("mode").textContent = status.mode;
  // Bank transfers a run waits for: its buys are not placed until an operator confirms each.
  const waiting = status.transfers_waiting || 0;
  $("transfers").hidden = !waiting;
  $("transfers").textContent = waiting + (waiting === 1 ? " bank transfer waits" : " bank transfers wait") + " for an operator";
  $("scope").textContent = session.may_change ? "operator" : "viewer (read only)";
  $("controls").hidden = !session.may_change;
  $("halt").disabled = status.halted;
  $("resume").disabled = !status.halted;
  $("rebalance-live").disabled = status.halted || status.mode !== "live";
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
  moneyPlaces = weights.money_places ?? moneyPlaces;
  $("kpi-value").textContent = money(weights.total_value) + (weights.quote ? " " + weights.quote : "");
  const slices = pieSlices(weights.nodes);
  Plotly.react("weights-chart", [{
    type: "pie", hole: 0.4, sort: false,
    labels: slices.map((n) => n.name),
    values: slices.map((n) => Number(n.actual_share)),
    customdata: slices.map((n) => pct(n.target_share)),
    hovertemplate: "%{label}: %{percent} (target %{customdata})<extra></extra>",
    texttemplate: "%{label}<br>%{percent:.2%}",
  }], { margin: { t: 10, b: 10, l: 10, r: 10 }, showlegend: true, legend: { orientation: "h" } },
  { displayModeBar: false, responsive: true });
  const listed = weights.nodes.filter((n) => n.kind === "sector" || n.kind === "strategy");
  fillTable("weights-table", (listed.length ? listed : weights.nodes).map((n) => [
    cell(n.path, "wrap"), cell(pct(n.actual_share), "num"), cell(pct(n.target_share), "num"),
  ]));
}

function showPerformance(performance, equity) {
  const own = performance && performance.portfolio;
  const annual = own && own.annualised;
  $("kpi-return").textContent = own && own.periods ? pct(own.time_weighted_return) : "-";
  $("kpi-drawdown").textContent = own && own.periods ? pct(own.max_drawdown) : "-";
  $("kpi-volatility").textContent = annual ? pct(annual.volatility) : "n/a";
  $("kpi-sharpe").textContent = annual ? ratio(annual.sharpe) : "n/a";
  $("kpi-sortino").textContent = annual ? ratio(annual.sortino) : "n/a";
  const notes = [];
  if (own && own.periods) {
    const periods = `${own.periods} period${own.periods === 1 ? "" : "s"}`;
    notes.push(`From ${when(own.from)} to ${when(own.to)} UTC: ${periods} of ${own.frequency.step} (${own.frequency.resampling}),`
      + ` net of ${money(own.net_flows)} ${own.quote || ""} deposited or withdrawn`
      + (own.gaps ? `; ${own.gaps} gap${own.gaps === 1 ? "" : "s"} without valuations (${own.gap_span}), not counted as periods` : ""));
    if (!annual) notes.push(`not annualised: ${own.not_annualised}`);
    if (!missing(own.volatility_per_period)) notes.push(`volatility per ${own.frequency.step}: ${pct(own.volatility_per_period)}`);
  } else {
    notes.push(own ? own.not_annualised : "no valuation of the portfolio yet");
  }
  $("kpi-note").textContent = notes.join("; ") + ".";
  const strategies = performance ? performance.strategies : [];
  fillTable("strategies-table", strategies.map((s) => [
    cell(s.strategy_id), cell(missing(s.annualised_return) ? "n/a" : pct(s.annualised_return), "num"),
    cell(pct(s.cumulative_return), "num"), cell(span(s.observations, s.frequency), "num"),
    cell(ratio(s.sharpe), "num"), cell(pct(s.max_drawdown), "num"),
  ]));
  $("strategies-note").textContent = strategies.length
    ? "return p.a.: annualised over the span shown (n/a when the span is too short); total return: compounded over it."
    : "no strategy returns reported";
  const points = equity ? equity.points : [];
  Plotly.react("equity-chart", [{
    type: "scatter", mode: "lines", name: "value",
    x: points.map((p) => p.t), y: points.map((p) => (p.value === null ? null : Number(p.value))),
    line: { color: "#2f5bd3" },
    hovertemplate: "%{x}: %{y:,.2f}<extra></extra>",
  }], {
    margin: { t: 10, b: 40, l: 80, r: 10 },
    yaxis: { title: { text: (equity && equity.quote) || "value", standoff: 12 }, tickformat: ",.0f", automargin: true },
    annotations: points.length ? [] : [{ text: "no valuation yet", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5 }],
  }, { displayModeBar: false, responsive: true });
}

// The autopilot (GET /portfolio/policy): the policy in force, its next scheduled check, the drift now
// against each band (nearest to its limit first) and the last decision with its reason.
function policyText(policy) {
  const parts = Object.entries(policy).filter(([key]) => key !== "bands")
    .map(([key, value]) => key.startsWith("drift_") ? `${key} ${pct(value)}` : `${key} ${value}`);
  const overrides = Object.keys(policy.bands || {}).length;
  return parts.join(", ") + (overrides ? `, ${overrides} node band(s)` : "");
}

// The autopilot's sentences carry weights as percents (22.73%); decisions journaled by older versions carry
// fractions (0.227272727273), shown as percents too. A number already followed by % is left alone.
const readable = (text) => text.replace(/\b(weight|target of|limit) (\d+(?:\.\d+)?)(?![\d.%])/g, (_, word, x) => `${word} ${pct(x)}`);

function showAutopilot(found) {
  const policy = found && found.policy;
  $("autopilot-policy").textContent = policy
    ? `policy v${found.version} (set by ${found.author}, ${when(found.created_at)} UTC): ${policyText(policy)}`
    : "no policy: the autopilot does nothing (rebal policy set FILE)";
  const state = (found && found.status) || {};
  $("autopilot-next").textContent = policy ? "next scheduled check: " + (state.next_scheduled ? when(state.next_scheduled) + " UTC" : "none (no schedule)") : "";
  const decision = found && found.last_decision;
  $("autopilot-decision").textContent = decision ? `last decision, ${when(decision.decided_at)} UTC: ${readable(decision.summary)}` : (policy ? "no decision yet" : "");
  fillList("autopilot-reasons", decision ? decision.reasons.map(readable) : []);
  fillTable("autopilot-bands", (state.drift || []).map((row) => [
    cell(row.path, "wrap"), cell(row.band), cell(pct(row.current_weight), "num"), cell(pct(row.desired_weight), "num"),
    cell(pct(row.drift), "num" + (row.breach ? " bad" : "")), cell(pct(row.limit), "num"),
    cell(Math.round(row.used * 100) + "%", "num" + (row.breach ? " bad" : "")),
  ]));
}

let waiting = null;

function showWaiting(plans, now) {
  // The latest preview that can still be approved: not approved, not expired.
  waiting = (plans ? plans.plans : []).find((p) => p.status === "preview" && !p.approved_at && new Date(p.expires_at) > now) || null;
  $("waiting").hidden = !waiting;
  $("approve").hidden = !waiting || !session.may_change;
  if (!waiting) return;
  $("waiting-summary").textContent = `plan ${waiting.plan_id}, made ${when(waiting.created_at)} UTC, expires ${when(waiting.expires_at)} UTC:`
    + ` ${waiting.orders.length} orders, ${waiting.skipped.length} skipped, band ${pct(waiting.band)}`;
  fillTable("waiting-orders", waiting.orders.map((o) => [
    cell(String(o.phase), "num"), cell(o.account, "wrap"), cell(o.symbol), cell(o.side, o.side),
    cell(amount(o.amount, o.symbol.split("/")[0]), "num"), cell(money(o.est_cost), "num"),
  ]));
  fillList("waiting-skips", skipLines(waiting));
}

function fillsOf(order) {
  const fills = order.fills || [];
  const filled = fills.reduce((sum, f) => sum + Number(f.amount), 0);
  const cost = fills.reduce((sum, f) => sum + Number(f.amount) * Number(f.price), 0);
  const fee = fills.reduce((sum, f) => sum + Number(f.fee), 0);
  return { filled, price: filled ? cost / filled : null, fee };
}

function showLastRun(page) {
  const run = page && page.runs.length ? page.runs[0] : null;
  if (!run) {
    $("last-run").textContent = "no run yet";
    fillTable("last-run-orders", []);
    fillList("last-run-skips", []);
    return;
  }
  const counts = run.counts || {};
  $("last-run").textContent = `run ${run.run_id}: ${run.status}, planned ${when(run.planned_at)} UTC`
    + (run.finished_at ? `, finished ${when(run.finished_at)} UTC` : "")
    + ` — ${counts.orders ?? 0} orders, ${counts.filled ?? 0} filled, ${counts.skipped ?? 0} skipped, ${counts.failed ?? 0} failed`;
  $("last-run").className = "status-" + run.status;
  fillTable("last-run-orders", (run.orders || []).map((o) => {
    const base = o.symbol.split("/")[0];
    const done = fillsOf(o);
    return [
      cell(String(o.phase), "num"), cell(o.account, "wrap"), cell(o.symbol), cell(o.side, o.side),
      cell(amount(o.amount, base), "num"), cell(amount(done.filled, base), "num"),
      cell(missing(done.price) ? "-" : money(done.price), "num"), cell(money(done.fee), "num"),
    ];
  }));
  fillList("last-run-skips", skipLines(run));
}

function showDiff(diff) {
  const holder = $("diff-tree");
  holder.replaceChildren();
  if (!diff) return;
  amountSteps = diff.amount_steps || {};
  moneyPlaces = diff.money_places ?? moneyPlaces;
  valuationQuote = diff.quote || null;
  const list = document.createElement("ul");
  list.append(treeNode(diff.diff));
  holder.append(list);
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
  op.textContent = node.operation === "hold" ? "hold" : `${node.operation} ${money(Math.abs(Number(node.diff_value)))}`;
  li.append(name, weights, op);
  if (node.asset) {
    const amounts = document.createElement("span");
    amounts.className = "amounts";
    amounts.textContent = `${node.asset} ${amount(node.current_amount, node.asset)} → ${amount(node.desired_amount, node.asset)}`;
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
      cell(when(run.planned_at)), cell(run.run_id, "id"), cell(run.status, "status-" + run.status),
      cell(String(counts.orders ?? 0), "num"), cell(String(counts.filled ?? 0), "num"),
      cell(String(counts.skipped ?? 0), "num"), cell(String(counts.failed ?? 0), "num"),
      cell(skipLines(run).join("; "), "wrap"),
    ];
  }));
  const rows = $("history").querySelectorAll("tbody tr");
  (page ? page.runs : []).forEach((run, i) => { rows[i].dataset.runId = run.run_id; });
}

// -- controls ---------------------------------------------------------------------------------------
async function act(question, method, path, body, done) {
  if (!confirm(question)) return;
  try {
    const answer = await call(method, path, {}, body);
    notice(done(answer));
  } catch (error) {
    problem(error.message);
  }
  refresh();
}

$("preview").addEventListener("click", () => act(
  "Make a dry-run plan now? It is stored and sends nothing; approve it to trade.",
  "POST", "/portfolio/rebalance", { dry_run: true },
  (plan) => `preview ${plan.plan_id}: ${plan.orders.length} orders, ${plan.skipped.length} skipped (approve it below)`,
));
$("rebalance-live").addEventListener("click", () => act(
  "Rebalance now, LIVE: the orders go to the exchanges at once. Continue?",
  "POST", "/portfolio/rebalance", { dry_run: false },
  (plan) => `live run ${plan.run_id}: ${plan.orders.length} orders sent`,
));
$("approve").addEventListener("click", () => waiting && act(
  `Execute plan ${waiting.plan_id} (${waiting.orders.length} orders) on the exchanges now?`,
  "POST", `/portfolio/plans/${waiting.plan_id}/approve`, undefined,
  (plan) => `plan ${plan.plan_id} approved: run ${plan.approval_run_id}`,
));
$("halt").addEventListener("click", () => {
  const reason = prompt("Halt trading: our open orders are cancelled and no run starts until resumed. Why?", "halted from the dashboard");
  if (reason === null || !reason.trim()) return;
  act(`Halt trading (${reason})?`, "POST", "/halt", { reason }, (sent) => sent.halt_state === "in_force"
    ? `halt in force: ${reason}`
    : `halt NOT in force (${sent.halt_state}): the executor has not acknowledged it; is it running?`);
});
$("resume").addEventListener("click", () => act(
  "Resume trading: runs are accepted again. Continue?", "POST", "/resume", {}, () => "resume sent",
));

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
  if (message) $("notice").hidden = true;
}

function notice(message) {
  $("notice").hidden = !message;
  $("notice").textContent = message || "";
}

let timer = null;
async function refresh() {
  clearTimeout(timer);
  if (!sessionStorage.getItem(TOKEN_KEY)) {
    signedIn(false);
    return;
  }
  try {
    const [who, current, weights, performance, equity, history, plans, diff, autopilot] = await Promise.all([
      api("/session"), api("/status"), api("/portfolio/weights"), api("/portfolio/performance"),
      api("/portfolio/equity"), api("/portfolio/history", { limit: 20, include_previews: false }),
      api("/portfolio/plans", { limit: 5 }), api("/portfolio/trees/diff"), api("/portfolio/policy"),
    ]);
    session = who;
    status = current;
    signedIn(true);
    showStatus();
    showDiff(diff);
    showWeights(weights);
    showPerformance(performance, equity);
    showAutopilot(autopilot);
    showWaiting(plans, new Date());
    showLastRun(history);
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
