// The shop page: a customer, their purchases and recommendations, the funnel's trace, search
// with refinement chips, the cart and buying. Only the service's own endpoints are called.
import {
  ApiFailure,
  api,
  apiKey,
  card,
  clear,
  colourAttribute,
  colourOf,
  el,
  fmtInt,
  fmtMs,
  plural,
  pretty,
  setApiKey,
  shortId,
  typeAttribute,
} from "./common.js";

const $ = (id) => document.getElementById(id);

const state = {
  user: null, // the customer shown
  k: 12,
  recIds: [], // the recommendations on screen, in order
  cart: [], // item ids
  items: new Map(), // item id -> the latest item object seen (names, prices)
  names: new Map(), // item id -> name (GET /v1/items)
  query: "",
  refinements: new Map(), // attribute -> Map(value as text -> the value, typed as the facet's)
  searchSeq: 0,
  userSeq: 0,
};

// -- notices ---------------------------------------------------------------------------------------

let noticeTimer = null;

function notify(message, kind = "info") {
  const box = $("notice");
  clearTimeout(noticeTimer);
  if (kind !== "error") noticeTimer = setTimeout(() => { box.hidden = true; }, kind === "success" ? 12000 : 5000);
  clear(box, el("span", { text: message }), el("button", {
    class: "close", type: "button", "aria-label": "dismiss", text: "×",
    onclick: () => { box.hidden = true; },
  }));
  box.className = `notice ${kind}`;
  box.hidden = false;
}

function failure(err) {
  if (err instanceof ApiFailure) return err.message;
  return String(err && err.message ? err.message : err);
}

// -- names ---------------------------------------------------------------------------------------

function remember(items) {
  for (const item of items) {
    const seen = state.items.get(item.item_id) || {};
    state.items.set(item.item_id, { ...seen, ...item });
    if (item.name) state.names.set(item.item_id, item.name);
  }
}

// The names of items a list lacks, from GET /v1/items (cards show their type until then).
async function fillNames(items) {
  const missing = [...new Set(items.map((i) => i.item_id))].filter(
    (id) => !state.names.has(id),
  );
  if (!missing.length) return;
  for (let lo = 0; lo < missing.length; lo += 200) {
    try {
      const { data } = await api("/v1/items", { params: { ids: missing.slice(lo, lo + 200) } });
      for (const item of data.items) {
        state.names.set(item.item_id, item.name || "");
        remember([item]);
      }
    } catch {
      return; // cards keep their type as a name
    }
  }
}

function nameOf(id) {
  return state.names.get(id) || (state.items.get(id) || {}).name || id;
}

// -- cards ---------------------------------------------------------------------------------------

function actions(item) {
  return [
    el("button", {
      type: "button", class: "secondary", "data-act": "cart", text: "Add to cart",
      onclick: () => addToCart(item.item_id),
    }),
    el("button", {
      type: "button", "data-act": "buy", text: "Buy",
      onclick: () => buy(item.item_id),
    }),
  ];
}

function sourceBadges(item) {
  const entries = Object.entries(item.sources || {}).sort((a, b) => a[1] - b[1]);
  if (!entries.length && item.score === null) {
    return [el("span", { class: "badge muted-badge", text: "top-up", title: "most sold recently" })];
  }
  const shown = entries.slice(0, 3).map(([name, rank]) =>
    el("span", { class: "badge", text: `${name} #${rank}`, title: `proposed by ${name} at rank ${rank}` }),
  );
  if (entries.length > 3) {
    const rest = entries.slice(3).map(([name, rank]) => `${name} #${rank}`).join(", ");
    shown.push(el("span", { class: "badge muted-badge", text: `+${entries.length - 3}`, title: rest }));
  }
  return shown;
}

function cards(target, items, { fresh = new Set(), bought = null, withActions = true } = {}) {
  const colour = colourAttribute(items);
  const type = typeAttribute(items, colour);
  const names = Object.fromEntries(state.names);
  clear(
    target,
    items.map((item) => {
      const badges = [...sourceBadges(item)];
      if (fresh.has(item.item_id)) badges.unshift(el("span", { class: "badge fresh", text: "new" }));
      if (item.item_id === bought) badges.unshift(el("span", { class: "badge bought", text: "just bought" }));
      const node = card(item, {
        colour, type, names, badges, actions: withActions ? actions(item) : [],
      });
      if (fresh.has(item.item_id)) node.classList.add("fresh");
      if (item.reasons && item.reasons.length) {
        node.querySelector(".card-body").append(
          el("details", { class: "why" }, el("summary", { text: "Why" }),
            el("ul", {}, item.reasons.map((r) => el("li", { text: r })))),
        );
      }
      return node;
    }),
  );
}

// -- the customer ----------------------------------------------------------------------------------

async function loadShowcase() {
  const box = $("showcase");
  try {
    const { data } = await api("/v1/showcase");
    state.k = data.k || state.k;
    clear(
      box,
      data.users.map((u) =>
        el(
          "button",
          {
            type: "button", class: "user-choice", "data-kind": u.kind, "data-user": u.user_id,
            title: u.user_id, onclick: () => selectUser(u.user_id),
          },
          el("strong", { text: u.label }),
          el("span", { class: "desc", text: u.description }),
        ),
      ),
      data.notes.length ? el("p", { class: "muted small", text: data.notes.join("; ") }) : null,
    );
    clear($("user-list"), data.users.map((u) => el("option", { value: u.user_id, label: u.label })));
  } catch (err) {
    clear(box, el("p", { class: "error", text: `Customers unavailable: ${failure(err)}` }));
  }
}

function markChosen() {
  for (const b of document.querySelectorAll(".user-choice")) {
    b.setAttribute("aria-pressed", b.dataset.user === state.user ? "true" : "false");
  }
}

async function selectUser(userId) {
  userId = userId.trim();
  if (!userId) return;
  if (userId !== state.user) {
    state.recIds = [];
  }
  state.user = userId;
  $("user-input").value = userId;
  markChosen();
  const hash = `#user=${encodeURIComponent(userId)}`;
  if (location.hash !== hash) history.replaceState(null, "", hash);
  await refresh();
  if (state.query) search();
  if (state.cart.length) cartRecommendations();
}

// Recommendations (with the trace) and purchases of the current customer; `bought`: the item
// a purchase just added (highlighted, and the changes of the list counted).
async function refresh({ bought = null } = {}) {
  const user = state.user;
  if (!user) return;
  const seq = ++state.userSeq;
  $("user-status").textContent = "Loading…";
  $("recs-panel").setAttribute("aria-busy", "true");
  const before = state.recIds;
  const [recs, hist] = await Promise.allSettled([
    api(`/v1/users/${encodeURIComponent(user)}/recommendations`, {
      params: { k: state.k, trace: "true", explain: "true" },
    }),
    api(`/v1/users/${encodeURIComponent(user)}/history`, { params: { k: 12 } }),
  ]);
  if (seq !== state.userSeq) return; // another customer was picked meanwhile
  const lists = [];
  if (recs.status === "fulfilled") lists.push(...recs.value.data.items);
  if (hist.status === "fulfilled") remember(hist.value.data.items);
  await fillNames(lists);
  if (seq !== state.userSeq) return;
  $("recs-panel").removeAttribute("aria-busy");

  let changes = null;
  if (recs.status === "fulfilled") {
    const body = recs.value.data;
    remember(body.items);
    const ids = body.items.map((i) => i.item_id);
    const fresh = new Set(before.length ? ids.filter((id) => !before.includes(id)) : []);
    const gone = before.filter((id) => !ids.includes(id));
    changes = {
      fresh: fresh.size,
      gone,
      moved: before.length > 0 && before.some((id, i) => ids[i] !== id),
      was: before.indexOf(bought),
      now: ids.indexOf(bought),
    };
    state.recIds = ids;
    cards($("recs"), body.items, { fresh, bought });
    const flags = [];
    if (body.cold_start) flags.push(el("span", { class: "flag cold", text: "cold start" }));
    if (body.degraded) flags.push(el("span", { class: "flag warn", text: "degraded" }));
    clear($("recs-flags"), flags);
    $("recs-status").textContent = body.cold_start
      ? `${shortId(user)} is not a customer the workspace knows: the best sellers of their segment.`
      : `${plural(body.items.length, "item")} for ${shortId(user)}.`;
    renderTrace(body.trace || []);
  } else {
    clear($("recs"));
    clear($("recs-flags"));
    clear($("trace"));
    $("recs-status").textContent = `Recommendations unavailable: ${failure(recs.reason)}`;
  }

  if (hist.status === "fulfilled") {
    renderHistory(hist.value.data, bought);
  } else {
    clear($("history"));
    $("history-status").textContent = `Purchases unavailable: ${failure(hist.reason)}`;
  }
  $("user-status").textContent = "";
  return changes;
}

function renderHistory(body, bought) {
  const box = $("history");
  const status = $("history-status");
  if (body.cold_start) {
    clear(box);
    status.textContent = "A new customer: no purchases yet.";
    return;
  }
  const since = body.since_cutoff
    ? `, ${fmtInt(body.since_cutoff)} since the cutoff (events)`
    : "";
  status.textContent = `${plural(body.purchases, "purchase")}${since}; the latest:`;
  if (body.degraded) status.textContent += " (the online store failed: events missing)";
  const colour = colourAttribute(body.items);
  const type = typeAttribute(body.items, colour);
  let marked = false;
  clear(
    box,
    body.items.map((item) => {
      const node = card(item, { colour, type });
      node.classList.add("row-card");
      const when = el("span", { class: "date", text: item.date || "" });
      node.querySelector(".price-line").append(when);
      if (item.since_cutoff) {
        node.classList.add("since");
        node.querySelector(".price-line").prepend(
          el("span", { class: "badge fresh", text: "since cutoff" }),
        );
      }
      if (bought && !marked && item.item_id === bought) {
        node.classList.add("just-bought");
        marked = true;
      }
      return node;
    }),
  );
}

// -- the trace -----------------------------------------------------------------------------------

const STAGE_NAMES = {
  retrieve: "Retrieve", filter: "Filter", rank: "Rank", diversify: "Diversify",
  take: "Take", cold_start: "Cold start",
};

function bars(rows, { total = null, unit = "" } = {}) {
  const max = total || Math.max(1, ...rows.map((r) => r.value));
  return el(
    "div",
    { class: "bars" },
    rows.map((r) => {
      const fill = el("span", { class: `fill${r.value ? "" : " zero"}` });
      fill.style.width = `${Math.max(r.value ? 1.5 : 0, (100 * r.value) / max)}%`;
      return el(
        "div",
        { class: "bar-row", "data-name": r.name },
        el("span", { class: "bar-label", text: r.name, title: r.title || r.name }),
        el("span", { class: "bar" }, fill),
        el("span", { class: "bar-value", text: `${fmtInt(r.value)}${unit}` }),
        el("span", { class: "bar-ms", text: r.ms === undefined ? "" : fmtMs(r.ms) }),
      );
    }),
  );
}

function stageSummary(s) {
  switch (s.stage) {
    case "retrieve":
      return `${fmtInt(s.out)} candidates from ${Object.keys(s.sources || {}).length} sources`;
    case "filter": {
      const removed = (s.in ?? 0) - (s.out ?? 0);
      return `${fmtInt(s.in)} → ${fmtInt(s.out)} (${fmtInt(removed)} removed)`;
    }
    case "rank":
      return `${fmtInt(s.in)} ranked by ${s.scorer}`;
    case "diversify":
      return `re-ordered by ${s.method}`;
    case "take":
      return `top ${fmtInt(s.k)}: ${fmtInt(s.out)} items` +
        (s.topped_up ? `, ${fmtInt(s.topped_up)} topped up from the best sellers` : "");
    case "cold_start":
      return `${fmtInt(s.out)} best sellers of the segment`;
    default:
      return Object.entries(s)
        .filter(([k, v]) => !["stage", "ms"].includes(k) && typeof v !== "object")
        .map(([k, v]) => `${k} ${v}`).join(", ");
  }
}

function stageDetail(s) {
  const out = [];
  if (s.stage === "retrieve" && s.sources) {
    out.push(bars(Object.entries(s.sources).map(([name, value]) => ({
      name, value, ms: (s.source_ms || {})[name],
    }))));
    if (s.events && (s.events.purchases || s.events.items_sold)) {
      out.push(el("p", { class: "small muted", text:
        `since the cutoff: ${fmtInt(s.events.purchases)} purchases of theirs, ` +
        `${fmtInt(s.events.items_sold)} items sold by everyone` }));
    }
  }
  if (s.stage === "filter" && s.removed) {
    out.push(bars(Object.entries(s.removed).map(([name, value]) => ({ name, value })),
      { total: Math.max(1, s.in || 0), unit: " removed" }));
    const skipped = Object.entries(s.skipped || {});
    if (skipped.length) {
      out.push(el("p", { class: "small muted", text:
        `skipped: ${skipped.map(([n, why]) => `${n} (${why})`).join("; ")}` }));
    }
  }
  if (s.stage === "rank") {
    if (typeof s.score_ms === "number" && s.score_ms > 0) {
      out.push(el("p", { class: "small muted", text: `the trees alone: ${fmtMs(s.score_ms)}` }));
    }
    if (s.ranker) out.push(el("p", { class: "small muted", text: s.ranker }));
  }
  if (s.stage === "cold_start") {
    const seg = Object.entries(s.segment || {}).filter(([, v]) => v !== null);
    out.push(el("p", { class: "small muted", text: seg.length
      ? `segment: ${seg.map(([k, v]) => `${k} ${v}`).join(", ")}`
      : "segment unknown: everyone's best sellers" }));
    if (s.lists) {
      out.push(bars(Object.entries(s.lists).map(([name, value]) => ({ name, value }))));
    }
  }
  return out;
}

function renderTrace(trace) {
  const box = $("trace");
  if (!trace.length) {
    clear(box, el("p", { class: "muted", text: "No trace." }));
    return;
  }
  const total = trace.reduce((t, s) => t + (typeof s.ms === "number" ? s.ms : 0), 0);
  const timeline = el("div", { class: "timeline", title: `${fmtMs(total)} in all` });
  trace.forEach((s, i) => {
    const part = el("span", { class: `seg seg-${i % 6}`, title: `${s.stage}: ${fmtMs(s.ms)}` });
    part.style.flexGrow = String(Math.max(0.02, (s.ms || 0) / Math.max(total, 1e-9)));
    timeline.append(part);
  });
  clear(
    box,
    el("p", { class: "total" }, el("strong", { text: fmtMs(total) }), " in the funnel's stages"),
    timeline,
    el(
      "ol",
      { class: "stages" },
      trace.map((s, i) =>
        el(
          "li",
          { class: "stage", "data-stage": s.stage },
          el(
            "div",
            { class: "stage-head" },
            el("span", { class: `dot seg-${i % 6}` }),
            el("strong", { text: STAGE_NAMES[s.stage] || pretty(s.stage) }),
            el("span", { class: "stage-summary", text: stageSummary(s) }),
            el("span", { class: "stage-ms", text: fmtMs(s.ms) }),
          ),
          stageDetail(s),
        ),
      ),
    ),
  );
}

// -- cart ----------------------------------------------------------------------------------------

function renderCart() {
  const box = $("cart");
  if (!state.cart.length) {
    clear(box, el("p", { class: "muted small", text: "Empty: “Add to cart” on an item." }));
    clear($("cart-recs"));
    $("cart-status").textContent = "";
    return;
  }
  clear(
    box,
    state.cart.map((id) =>
      el(
        "span",
        { class: "chip in-cart", "data-item": id },
        el("span", { text: nameOf(id) }),
        el("button", {
          type: "button", class: "remove", "aria-label": `remove ${nameOf(id)} from the cart`,
          text: "×", onclick: () => removeFromCart(id),
        }),
      ),
    ),
  );
}

async function addToCart(id) {
  if (!state.cart.includes(id)) state.cart.push(id);
  renderCart();
  notify(`${nameOf(id)} added to the cart.`, "info");
  await cartRecommendations();
}

async function removeFromCart(id) {
  state.cart = state.cart.filter((x) => x !== id);
  renderCart();
  if (state.cart.length) await cartRecommendations();
}

async function cartRecommendations() {
  if (!state.cart.length) return;
  const status = $("cart-status");
  status.textContent = "Loading…";
  try {
    const { data } = await api("/v1/cart/recommendations", {
      method: "POST",
      body: { cart: state.cart, k: 8, explain: true, ...(state.user ? { user_id: state.user } : {}) },
    });
    await fillNames(data.items);
    remember(data.items);
    cards($("cart-recs"), data.items);
    status.textContent = data.items.length
      ? `${data.items.length} items often bought with the cart:`
      : "Nothing is bought with the cart's items.";
  } catch (err) {
    clear($("cart-recs"));
    status.textContent = `Cart recommendations unavailable: ${failure(err)}`;
  }
}

// -- buying --------------------------------------------------------------------------------------

function askKey(problem = "") {
  const dialog = $("key-dialog");
  const input = $("key-input");
  const error = $("key-error");
  error.hidden = !problem;
  error.textContent = problem;
  input.value = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      const key = dialog.returnValue === "ok" ? input.value.trim() : "";
      if (key) setApiKey(key);
      resolve(key);
    }, { once: true });
    dialog.returnValue = ""; // Escape keeps the last value otherwise
    dialog.showModal();
    input.focus();
  });
}

async function buy(id) {
  if (!state.user) {
    notify("Pick a customer first: a purchase is theirs.", "error");
    return;
  }
  let problem = "";
  for (let attempt = 0; attempt < 3; attempt++) {
    const key = apiKey() || (await askKey(problem));
    if (!key) {
      notify("Not bought: buying needs the service's API key.", "error");
      return;
    }
    const item = state.items.get(id) || {};
    const event = {
      type: "purchase", user_id: state.user, item_id: id,
      timestamp: new Date().toISOString(), quantity: 1,
      ...(typeof item.price === "number" ? { price: item.price } : {}),
    };
    try {
      const { status, data } = await api("/v1/events", { method: "POST", body: { events: [event] } });
      const changes = await refresh({ bought: id });
      const parts = [`Bought ${nameOf(id)} for ${shortId(state.user)}`];
      if (status === 202) parts.push("(logged: the store applies it later)");
      if (changes) {
        const what = [];
        if (changes.fresh) what.push(`${changes.fresh} new`);
        if (changes.gone.length) what.push(`${changes.gone.length} gone`);
        if (changes.was >= 0 && changes.now < 0) what.push("the bought item left the list");
        else if (changes.was >= 0 && changes.now !== changes.was) {
          what.push(`the bought item moved from #${changes.was + 1} to #${changes.now + 1}`);
        } else if (changes.was < 0 && changes.now >= 0) {
          what.push(`the bought item entered at #${changes.now + 1}`);
        }
        if (!what.length && changes.moved) what.push("re-ordered");
        parts.push(what.length ? `recommendations: ${what.join(", ")}.` : "recommendations unchanged.");
      }
      if (data && data.notes && data.notes.length) parts.push(data.notes.join(" "));
      notify(parts.join(" — "), "success");
      if (state.cart.length) cartRecommendations();
      return;
    } catch (err) {
      if (err instanceof ApiFailure && err.status === 401) {
        setApiKey("");
        problem = `The key was refused: ${failure(err)}`;
        continue;
      }
      notify(`Not bought: ${failure(err)}`, "error");
      return;
    }
  }
  notify("Not bought: the key was refused.", "error");
}

// -- search --------------------------------------------------------------------------------------

function filterParam() {
  const spec = {};
  for (const [attr, values] of state.refinements) {
    if (values.size) spec[attr] = { in: [...values.values()] };
  }
  return Object.keys(spec).length ? JSON.stringify(spec) : null;
}

function renderRefinements() {
  const chips = [];
  for (const [attr, values] of state.refinements) {
    for (const value of values.keys()) {
      chips.push(
        el(
          "span",
          { class: "chip refinement", "data-attr": attr, "data-value": value },
          el("span", { text: `${pretty(attr)}: ${value}` }),
          el("button", {
            type: "button", class: "remove", "aria-label": `remove ${value}`, text: "×",
            onclick: () => refine(attr, value, false),
          }),
        ),
      );
    }
  }
  clear($("refinements"), chips);
}

function refine(attr, value, on) {
  const values = state.refinements.get(attr) || new Map();
  if (on) values.set(String(value), value);
  else values.delete(String(value));
  if (values.size) state.refinements.set(attr, values);
  else state.refinements.delete(attr);
  renderRefinements();
  search();
}

function dot(value) {
  const d = el("span", { class: "dot chip-dot", "aria-hidden": "true" });
  d.style.background = colourOf(value);
  return d;
}

function renderFacets(facets) {
  const groups = Object.entries(facets || {}).filter(([, values]) => values && values.length);
  clear(
    $("facets"),
    groups.map(([attr, values]) => {
      const active = state.refinements.get(attr) || new Map();
      return el(
        "div",
        { class: "facet", "data-attr": attr },
        el("span", { class: "facet-name", text: pretty(attr) }),
        el(
          "div",
          { class: "chips" },
          values.map((v) => {
            const on = active.has(String(v.value));
            return el(
              "button",
              {
                type: "button", class: "chip facet-chip", "data-attr": attr,
                "data-value": String(v.value), "aria-pressed": on ? "true" : "false",
                onclick: () => refine(attr, v.value, !on),
              },
              /colou?r/i.test(attr) && colourOf(String(v.value)) ? dot(String(v.value)) : null,
              el("span", { text: String(v.value) }),
              el("span", { class: "count", text: fmtInt(v.count) }),
            );
          }),
        ),
      );
    }),
  );
}

async function search(query = null) {
  if (query !== null) state.query = query;
  const q = state.query.trim();
  const status = $("search-status");
  const panel = $("search-panel");
  if (!q) return;
  const seq = ++state.searchSeq;
  status.textContent = "Searching…";
  panel.setAttribute("aria-busy", "true");
  try {
    const { data } = await api("/v1/search", {
      params: { q, user_id: state.user, k: 24, filter: filterParam() },
    });
    if (seq !== state.searchSeq) return;
    panel.classList.remove("unavailable");
    await fillNames(data.items);
    if (seq !== state.searchSeq) return;
    panel.removeAttribute("aria-busy");
    remember(data.items);
    cards($("search-results"), data.items);
    renderFacets(data.facets);
    const flags = [];
    if (data.personalized) flags.push(`personalized for ${shortId(data.user_id)}`);
    else flags.push("not personalized");
    if (data.cold_start) flags.push("cold start");
    if (data.degraded) flags.push("degraded");
    const total = typeof data.total === "number" ? data.total : data.items.length;
    clear(
      status,
      data.items.length
        ? `${plural(total, "result")} for “${data.query ?? q}” (${flags.join(", ")})`
        : `No results for “${data.query ?? q}”.`,
      data.suggestion
        ? el("span", { class: "suggestion" }, " Did you mean ",
          el("button", {
            type: "button", class: "link", text: data.suggestion,
            onclick: () => { $("search-input").value = data.suggestion; search(data.suggestion); },
          }), "?")
        : null,
    );
  } catch (err) {
    if (seq !== state.searchSeq) return;
    panel.removeAttribute("aria-busy");
    clear($("search-results"));
    clear($("facets"));
    if (err instanceof ApiFailure && (err.status === 404 || err.status === 503 || err.status === 0)) {
      panel.classList.add("unavailable");
      status.textContent = `Search unavailable (${err.status || "no answer"}): ${failure(err)}`;
    } else {
      status.textContent = `Search failed: ${failure(err)}`;
    }
  }
}

// -- start ---------------------------------------------------------------------------------------

$("user-form").addEventListener("submit", (e) => {
  e.preventDefault();
  selectUser($("user-input").value);
});
$("search-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const q = $("search-input").value.trim();
  if (q !== state.query) {
    state.refinements.clear();
    renderRefinements();
  }
  search(q);
});

loadShowcase().then(() => {
  const m = /^#user=(.+)$/.exec(location.hash);
  if (m) selectUser(decodeURIComponent(m[1]));
});
