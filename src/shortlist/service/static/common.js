// What both pages share: requests to the service, DOM helpers, colours and item cards.
// Everything is built with DOM calls (never innerHTML with data): names come from the catalogue.

const KEY_STORE = "shortlist.apiKey"; // sessionStorage: this tab only, never in the page

export function apiKey() {
  try {
    return sessionStorage.getItem(KEY_STORE) || "";
  } catch {
    return "";
  }
}

export function setApiKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY_STORE, key);
    else sessionStorage.removeItem(KEY_STORE);
  } catch {
    /* storage disabled: the key lives until the page is left */
  }
}

export class ApiFailure extends Error {
  constructor(status, body) {
    super((body && body.message) || `the service answered ${status}`);
    this.status = status;
    this.body = body;
  }
}

// fetch JSON from the service; the key (when the tab has one) goes with every request
export async function api(path, { method = "GET", params = null, body = null } = {}) {
  const url = new URL(path, location.origin);
  if (params) {
    for (const [name, value] of Object.entries(params)) {
      if (value === null || value === undefined || value === "") continue;
      for (const v of Array.isArray(value) ? value : [value]) url.searchParams.append(name, v);
    }
  }
  const headers = { accept: "application/json" };
  const key = apiKey();
  if (key) headers.authorization = `Bearer ${key}`;
  if (body !== null) headers["content-type"] = "application/json";
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === null ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiFailure(0, { message: `the service cannot be reached (${err.message})` });
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) throw new ApiFailure(response.status, data);
  return { status: response.status, data };
}

// -- DOM -----------------------------------------------------------------------------------------

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
  return node;
}

export const SVG_NS = "http://www.w3.org/2000/svg";

export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined) continue;
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  for (const child of children.flat()) if (child) node.append(child);
  return node;
}

// -- formatting ----------------------------------------------------------------------------------

export function fmtPrice(price) {
  if (price === null || price === undefined || Number.isNaN(price)) return "";
  return Math.abs(price) < 1 ? price.toFixed(4) : price.toFixed(2);
}

export function fmtMs(ms) {
  if (typeof ms !== "number") return "";
  return ms < 10 ? `${ms.toFixed(2)} ms` : `${ms.toFixed(1)} ms`;
}

// a long id (H&M's are 64 hex digits) shortened for a sentence: the page keeps the whole one
export function shortId(id) {
  const s = String(id ?? "");
  return s.length > 20 ? `${s.slice(0, 8)}…${s.slice(-4)}` : s;
}

export function plural(n, word, words = `${word}s`) {
  return `${fmtInt(n)} ${n === 1 ? word : words}`;
}

export function fmtInt(n) {
  return typeof n === "number" ? n.toLocaleString("en") : String(n ?? "");
}

// "colour_group_name" -> "Colour group"
export function pretty(attr) {
  const words = String(attr)
    .replace(/_(name|no|id|code)$/i, "")
    .replace(/[_-]+/g, " ")
    .trim();
  return words ? words[0].toUpperCase() + words.slice(1) : String(attr);
}

// -- colours -------------------------------------------------------------------------------------

// Common colour names of shops' catalogues (and every CSS colour name, through CSS.supports);
// modifiers (light, dark, ...ish) mix the base colour with white, black or another colour.
const COLOURS = {
  black: "#1b1b1b",
  white: "#ffffff",
  "off white": "#f4f1e8",
  offwhite: "#f4f1e8",
  cream: "#f3ead3",
  ivory: "#fffff0",
  beige: "#d9c8a9",
  grey: "#8d8d8d",
  gray: "#8d8d8d",
  silver: "#c0c0c0",
  gold: "#cfa93a",
  bronze: "#a97142",
  copper: "#b87333",
  "bronze/copper": "#b06f3b",
  blue: "#2f5fb3",
  navy: "#1f2f5c",
  turquoise: "#2cb7b0",
  teal: "#1f8a8a",
  green: "#3c8d40",
  khaki: "#9a9461",
  olive: "#7a7a35",
  mint: "#98d9b6",
  yellow: "#f2cf2f",
  mustard: "#c9a227",
  orange: "#ec8a2d",
  red: "#c62f2f",
  burgundy: "#7c1f2e",
  wine: "#722f37",
  pink: "#e88aa9",
  rose: "#e7a3b3",
  purple: "#7d4fa1",
  lilac: "#b9a2d6",
  lavender: "#b7a6de",
  violet: "#7f4fc9",
  brown: "#7a4f2c",
  camel: "#c19a6b",
  tan: "#c8a97e",
  denim: "#4a6b94",
  transparent: "#eeeeee",
  clear: "#eeeeee",
  multi: "#b0a0c8",
  multicolour: "#b0a0c8",
  multicolor: "#b0a0c8",
};
const MIX = { light: ["#ffffff", 0.45], dark: ["#000000", 0.4], pale: ["#ffffff", 0.6] };
export const FALLBACK_COLOUR = "#9e9e9e";

function hex(css) {
  const m = /^#([0-9a-f]{6})$/i.exec(css);
  if (!m) return null;
  const n = parseInt(m[1], 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

function mix(a, b, t) {
  const x = hex(a);
  const y = hex(b);
  if (!x || !y) return a;
  const c = x.map((v, i) => Math.round(v * (1 - t) + y[i] * t));
  return `#${c.map((v) => v.toString(16).padStart(2, "0")).join("")}`;
}

function cssColourName(word) {
  if (!/^[a-z]+$/.test(word) || ["other", "unknown", "none", "inherit", "initial"].includes(word))
    return null;
  return typeof CSS !== "undefined" && CSS.supports && CSS.supports("color", word) ? word : null;
}

function baseColour(word) {
  if (COLOURS[word]) return COLOURS[word];
  const css = cssColourName(word);
  if (!css) return null;
  // a CSS name as #rrggbb, so that modifiers can mix it
  const probe = document.createElement("canvas").getContext("2d");
  if (!probe) return css;
  probe.fillStyle = css;
  return probe.fillStyle;
}

const cache = new Map();

// A CSS colour for a colour name ("Dark Blue", "Greenish Khaki", "navy"), or null.
export function colourOf(name) {
  if (typeof name !== "string") return null;
  const key = name.trim().toLowerCase();
  if (!key) return null;
  if (cache.has(key)) return cache.get(key);
  let out = COLOURS[key] || null;
  if (!out) {
    const words = key.split(/[\s/,&+-]+/).filter(Boolean);
    let base = null;
    let at = -1;
    for (let i = words.length - 1; i >= 0; i--) {
      base = baseColour(words[i]);
      if (base) {
        at = i;
        break;
      }
    }
    if (base) {
      out = base;
      for (const word of words.slice(0, at)) {
        if (MIX[word]) out = mix(out, MIX[word][0], MIX[word][1]);
        else if (word.endsWith("ish")) {
          const tint = baseColour(word.slice(0, -3)) || baseColour(word.slice(0, -4));
          if (tint) out = mix(out, tint, 0.35);
        }
      }
    }
  }
  cache.set(key, out);
  return out;
}

const SKIP = new Set(["item_id", "score", "sources", "price", "reasons", "name", "date",
  "quantity", "since_cutoff"]);

// The attribute of these items whose values look like colour names (most of them known), or null.
export function colourAttribute(items) {
  const tally = new Map();
  for (const item of items) {
    for (const [attr, value] of Object.entries(item)) {
      if (SKIP.has(attr) || typeof value !== "string") continue;
      const t = tally.get(attr) || { seen: 0, colours: 0 };
      t.seen += 1;
      if (colourOf(value)) t.colours += 1;
      tally.set(attr, t);
    }
  }
  let best = null;
  let bestScore = 0;
  for (const [attr, t] of tally) {
    const share = t.colours / t.seen;
    if (share < 0.5) continue;
    const score = share + (/colou?r/i.test(attr) ? 1 : 0);
    if (score > bestScore) {
      best = attr;
      bestScore = score;
    }
  }
  return best;
}

// The attribute that says what kind of item it is: one named like a type, else the first shown.
export function typeAttribute(items, colour) {
  const attrs = [];
  for (const item of items) {
    for (const [attr, value] of Object.entries(item)) {
      if (!SKIP.has(attr) && attr !== colour && typeof value === "string" && !attrs.includes(attr))
        attrs.push(attr);
    }
  }
  return attrs.find((a) => /type/i.test(a)) || attrs[0] || null;
}

// -- cards ---------------------------------------------------------------------------------------

// An item card: colour swatch, name, type, price; `extra(card, item)` adds what a list needs.
export function card(item, { colour, type, names = {}, badges = [], actions = [] } = {}) {
  const value = colour ? item[colour] : null;
  const css = colourOf(value);
  const swatch = el("span", {
    class: `swatch${css ? "" : " unknown"}`,
    title: value ? `${pretty(colour)}: ${value}` : "no colour",
    "data-colour": value || "",
    role: "img",
    "aria-label": value ? `colour ${value}` : "colour unknown",
  });
  swatch.style.background = css || FALLBACK_COLOUR;
  const name = item.name || names[item.item_id] || (type && item[type]) || item.item_id;
  const kind = type && item[type] && item[type] !== name ? item[type] : null;
  const node = el(
    "article",
    { class: "card", "data-item": item.item_id },
    swatch,
    el(
      "div",
      { class: "card-body" },
      el("h3", { class: "name", text: name, title: item.item_id }),
      el(
        "p",
        { class: "meta" },
        kind ? el("span", { class: "type", text: kind }) : null,
        value ? el("span", { class: "colour-name", text: value }) : null,
      ),
      el(
        "p",
        { class: "price-line" },
        item.price !== null && item.price !== undefined
          ? el("span", { class: "price", text: fmtPrice(item.price) })
          : null,
        badges,
      ),
      actions.length ? el("div", { class: "actions" }, actions) : null,
    ),
  );
  return node;
}
