// The command centre's screen: map, live alerts, ticket board, cameras, devices, figures and
// recurring problems. It only calls the API, with the signed-in token.

import { $, el, toast } from "./dom.js";
import { ApiError, get, imageUrl, openStream, post } from "./api.js";
import { toMapDatum } from "./datum.js";
import { duration, lang, startI18n, t } from "./i18n.js";
import { ACTIONS_BY_STATE, bySla, slaClock } from "./sla.js";
import { signIn, signOut } from "./signin.js";

const L = window.L;
const BOARD_STATES = ["new", "dispatched", "accepted", "on_site", "reopened", "resolved"];
const FEED_MAX = 200;
const CAMERA_TILES = 24;
const FEED_BACKLOG_S = 15 * 60; // a reloaded screen starts with the last quarter hour
const BEHIND_S = 5; // an alert older than this when it arrives: the feed is behind
const BEHIND_SHOWN_MS = 15000; // how long a gap stays on screen

const state = {
  me: null,
  toMap: null,
  map: null,
  gridLayer: null,
  deviceLayer: null,
  cameraLayer: null,
  tickets: [],
};

function localMidnight() {
  const d = new Date();
  d.setHours(0, 0, 0, 0);
  return d.toISOString();
}

function debounce(fn, ms) {
  let timer = null;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
}

// ---- figures ------------------------------------------------------------------------------------

async function loadFigures() {
  const f = await get(`/api/v1/figures?day_start=${encodeURIComponent(localMidnight())}`);
  const pct = (v) => (v === null ? "—" : `${v}%`);
  const items = [
    ["open", f.open, ""],
    ["overdue", f.overdue, f.overdue > 0 ? "bad" : ""],
    ["closure_rate", pct(f.closure_rate_pct), ""],
    ["on_time_rate", pct(f.on_time_closure_rate_pct), ""],
    ["reopen_rate", pct(f.reopen_rate_pct), ""],
    ["median_accept", f.median_accept_s === null ? "—" : duration(f.median_accept_s), ""],
  ];
  const today = Object.entries(f.events_today)
    .sort((a, b) => b[1] - a[1])
    .map(([k, n]) => `${t(k)} ${n}`)
    .join(" · ");
  $("figures").replaceChildren(
    ...items.map(([k, v, cls]) =>
      el(
        "div",
        { class: `figure ${cls}`, "data-figure": k },
        el("div", { class: "v" }, String(v)),
        el("div", { class: "k" }, t(k)),
      ),
    ),
    el(
      "div",
      { class: "figure", "data-figure": "events_today" },
      el("div", { class: "k" }, t("events_today")),
      el("div", {}, today || "—"),
    ),
  );
  // the units a centre ranks: each team's rates, best on-time closure first
  $("units").replaceChildren(
    el(
      "tr",
      {},
      ...["team", "due", "closure_rate", "on_time_rate", "reopen_rate", "median_accept"].map((k) =>
        el("th", {}, t(k)),
      ),
    ),
    ...f.units.map((u) =>
      el(
        "tr",
        { "data-unit": u.team },
        el("td", {}, u.team),
        el("td", {}, String(u.due)),
        el("td", {}, pct(u.closure_rate_pct)),
        el("td", {}, pct(u.on_time_closure_rate_pct)),
        el("td", {}, pct(u.reopen_rate_pct)),
        el("td", {}, u.median_accept_s === null ? "—" : duration(u.median_accept_s)),
      ),
    ),
  );
}

// ---- map ----------------------------------------------------------------------------------------

async function initMap() {
  const settings = await get("/api/v1/map");
  state.toMap = toMapDatum(settings.datum);
  const map = L.map("map", { zoomSnap: 0.25, attributionControl: !!settings.tiles });
  state.map = map;
  if (settings.tiles) {
    L.tileLayer(settings.tiles, {
      maxZoom: settings.tiles_max_zoom,
      attribution: settings.tiles_attribution,
    }).addTo(map);
  }
  const doc = await get("/api/v1/map/grids");
  const toLatLng = (c) => L.latLng(...state.toMap(c[1], c[0]));
  state.gridLayer = L.geoJSON(doc, {
    coordsToLatLng: toLatLng,
    style: (f) => gridStyle(f.properties, {}),
    onEachFeature: (f, layer) => layer.bindTooltip(`${f.properties.name || f.properties.id}`),
  }).addTo(map);
  const bounds = state.gridLayer.getBounds();
  if (bounds.isValid()) map.fitBounds(bounds);
  else map.setView([30.25, 120.15], 13);
  state.deviceLayer = L.layerGroup().addTo(map);
  state.cameraLayer = L.layerGroup().addTo(map);
  state.alertLayer = L.layerGroup().addTo(map);
  $("legend").replaceChildren(
    ...[
      ["var(--bad)", t("overdue")],
      ["var(--warn)", t("open")],
      ["var(--ok)", t("online")],
      ["var(--fault)", t("faults")],
      ["#7f8c8d", t("offline")],
    ].map(([c, label]) => el("span", {}, el("i", { style: `background:${c}` }), label)),
  );
}

function gridStyle(props, counts) {
  const micro = !!props.parent;
  const c = counts[props.id] || { open: 0, breached: 0 };
  const color = c.breached ? "#e74c3c" : c.open ? "#f39c12" : "#3a6ea5";
  return {
    className: `${micro ? "micro-grid" : "grid"}${c.breached ? " overdue" : c.open ? " open" : ""}`,
    color: micro ? "#2c5282" : color,
    weight: micro ? 0.5 : 1.2,
    fillColor: color,
    fillOpacity: c.breached ? 0.5 : c.open ? 0.35 : micro ? 0 : 0.06,
  };
}

async function loadGridCounts() {
  const [grids, micro] = await Promise.all([get("/api/v1/grids"), get("/api/v1/grids?level=micro_grid")]);
  const counts = {};
  for (const g of [...grids, ...micro]) counts[g.id] = { open: g.open_tickets, breached: g.breached_tickets };
  state.gridLayer.eachLayer((layer) => {
    const style = gridStyle(layer.feature.properties, counts);
    layer.setStyle(style);
    const path = layer.getElement?.();
    if (path) path.setAttribute("class", `leaflet-interactive ${style.className}`);
  });
  return grids;
}

function deviceColor(d) {
  if (!d.online) return "#7f8c8d";
  if (d.active_faults.length) return "#9b59b6";
  if (d.active_alarms.length) return "#e74c3c";
  return "#2ecc71";
}

// ---- devices ------------------------------------------------------------------------------------

let gridOptionsSet = false;
async function loadDevices(grids) {
  const all = await get("/api/v1/devices");
  state.deviceLayer.clearLayers();
  for (const d of all) {
    L.circleMarker(state.toMap(d.lat, d.lon), {
      radius: 4,
      color: deviceColor(d),
      fillOpacity: 0.9,
      weight: 1,
      className: "device",
    })
      .bindTooltip(`${d.id} · ${t(d.type)} · ${d.online ? t("online") : t("offline")}`)
      .addTo(state.deviceLayer);
  }
  if (!gridOptionsSet && grids) {
    gridOptionsSet = true;
    $("device-grid").replaceChildren(
      el("option", { value: "" }, t("all_grids")),
      ...grids.map((g) => el("option", { value: g.id }, g.name || g.id)),
    );
    const types = [...new Set(all.map((d) => d.type))].sort();
    $("device-type").replaceChildren(
      el("option", { value: "" }, t("all_types")),
      ...types.map((ty) => el("option", { value: ty }, t(ty))),
    );
  }
  const grid = $("device-grid").value;
  const type = $("device-type").value;
  const shown = all.filter((d) => (!grid || d.grid_id === grid) && (!type || d.type === type));
  // trouble first: offline, faults, alarms
  const rank = (d) => (!d.online ? 0 : d.active_faults.length ? 1 : d.active_alarms.length ? 2 : 3);
  shown.sort((a, b) => rank(a) - rank(b) || a.id.localeCompare(b.id));
  const rows = shown.slice(0, 300).map((d) => {
    const battery = d.active_faults.some((e) => e.kind === "battery_low");
    return el(
      "tr",
      { "data-device": d.id },
      el("td", {}, d.id),
      el("td", {}, t(d.type)),
      el("td", {}, d.grid_id),
      el(
        "td",
        {},
        el("span", { class: `badge ${d.online ? "" : "offline"}` }, d.online ? t("online") : t("offline")),
        d.in_maintenance ? el("span", { class: "badge stale" }, t("in_maintenance")) : "",
      ),
      el("td", {}, battery ? el("span", { class: "badge stale" }, t("low_battery")) : ""),
      el(
        "td",
        {},
        ...d.active_faults
          .filter((e) => e.kind !== "battery_low")
          .map((e) => el("span", { class: "badge fault" }, t(e.kind))),
      ),
      el("td", {}, ...d.active_alarms.map((e) => el("span", { class: "badge bad" }, t(e.kind)))),
      el(
        "td",
        { class: "muted" },
        d.last_seen ? new Date(d.last_seen).toLocaleTimeString(lang()) : t("never"),
      ),
    );
  });
  $("devices").replaceChildren(
    el(
      "tr",
      {},
      ...["ID", t("kind"), t("grid"), "", t("low_battery"), t("faults"), t("alarms"), t("last_seen")].map(
        (h) => el("th", {}, h),
      ),
    ),
    ...rows,
  );
}

// ---- cameras ------------------------------------------------------------------------------------

async function loadCameras() {
  const cams = await get("/api/v1/cameras");
  state.cameraLayer.clearLayers();
  for (const c of cams) {
    if (c.lat !== null) {
      L.circleMarker(state.toMap(c.lat, c.lon), {
        radius: 7,
        color: c.state === "ok" ? "#3498db" : "#7f8c8d",
        weight: 3,
        fillOpacity: 0.2,
        className: "camera",
      })
        .bindTooltip(`${c.id} · ${t(`state_${c.state}`)}`)
        .addTo(state.cameraLayer);
    }
  }
  // a wall of thousands of cameras shows the ones that need eyes: alarming, offline, stale first
  const rank = (c) => (c.active_alarms ? 0 : c.state === "offline" ? 1 : c.state === "stale" ? 2 : 3);
  const shown = [...cams]
    .sort((a, b) => rank(a) - rank(b) || a.id.localeCompare(b.id))
    .slice(0, CAMERA_TILES);
  const tiles = shown.map((c) => {
    const img = el("img", { alt: c.id });
    imageUrl(c.frame_url)
      .then((u) => (img.src = u))
      .catch(() => (img.alt = t("no_frame")));
    return el(
      "div",
      { class: "cam", "data-camera": c.id },
      img,
      el(
        "div",
        {},
        `${c.id} `,
        el("span", { class: `badge ${c.state}` }, t(`state_${c.state}`)),
        c.active_alarms ? el("span", { class: "badge bad" }, `${t("alarms")} ${c.active_alarms}`) : null,
        el("span", { class: "muted" }, ` ${duration(c.frame_age_s)} · ${c.edge_id}`),
      ),
    );
  });
  $("cams").replaceChildren(...(tiles.length ? tiles : [el("div", { class: "muted" }, t("no_frame"))]));
}

// ---- hotspots -----------------------------------------------------------------------------------

async function loadHotspots() {
  const rep = await get("/api/v1/reports/hotspots?min_count=3&days=30");
  $("hotspots").replaceChildren(
    el("tr", {}, ...[t("kind"), t("grid"), t("place"), ""].map((h) => el("th", {}, h))),
    ...rep.hotspots
      .slice(0, 20)
      .map((h) =>
        el(
          "tr",
          {},
          el("td", {}, t(h.category)),
          el("td", {}, h.micro_grid_id || h.grid_id),
          el("td", { class: "muted" }, h.lat === null ? "" : `${h.lat.toFixed(5)},${h.lon.toFixed(5)}`),
          el("td", {}, t("occurrences", { n: h.occurrences })),
        ),
      ),
  );
}

// ---- ticket board -------------------------------------------------------------------------------

function inScope(ticket) {
  const me = state.me;
  if (me.role === "grid_worker")
    return me.grids.includes(ticket.grid_id) || me.grids.includes(ticket.micro_grid_id);
  if (me.role === "team") return ticket.team === me.team;
  return true;
}

function allowedActions(ticket) {
  if (!state.me.can_write || !inScope(ticket)) return [];
  return (ACTIONS_BY_STATE[ticket.status] || []).filter((a) => state.me.actions.includes(a));
}

async function doAction(ticket, action, body = {}) {
  try {
    await post(`/api/v1/tickets/${ticket.id}/${action}`, body);
    refreshSoon();
  } catch (err) {
    toast(t("refused", { d: err instanceof ApiError ? err.detail : String(err) }));
  }
}

function actionButton(ticket, action, card) {
  return el(
    "button",
    {
      "data-action": action,
      onclick: (e) => {
        e.stopPropagation();
        if (action === "reassign") {
          const sel = el(
            "select",
            {},
            el("option", { value: "" }, t("choose_team")),
            ...state.me.teams.map((x) => el("option", { value: x }, x)),
          );
          const ok = el(
            "button",
            {
              onclick: (ev) => {
                ev.stopPropagation();
                if (sel.value) doAction(ticket, "reassign", { team: sel.value });
              },
            },
            "OK",
          );
          card.append(el("div", { class: "inline", onclick: (ev) => ev.stopPropagation() }, sel, ok));
        } else if (action === "comment") {
          const input = el("input", { placeholder: t("note") });
          const ok = el(
            "button",
            {
              onclick: (ev) => {
                ev.stopPropagation();
                if (input.value.trim()) doAction(ticket, "comment", { note: input.value.trim() });
              },
            },
            "OK",
          );
          card.append(el("div", { class: "inline", onclick: (ev) => ev.stopPropagation() }, input, ok));
        } else {
          doAction(ticket, action);
        }
      },
    },
    t(action),
  );
}

function clockText(ticket) {
  const c = slaClock(ticket);
  if (!c) return "";
  return `${t(c.timer)} · ${c.left >= 0 ? t("due_in", { t: duration(c.left) }) : t("overdue_by", { t: duration(-c.left) })}`;
}

async function loadBoard() {
  const tickets = await get(`/api/v1/tickets?state=${BOARD_STATES.join(",")}&limit=1000`);
  state.tickets = tickets;
  const columns = BOARD_STATES.map((s) => {
    const list = tickets.filter((x) => x.status === s).sort((a, b) => bySla(a, b));
    return el(
      "div",
      { class: "column", "data-state": s },
      el("h3", {}, `${t(s)} (${list.length})`),
      ...list.slice(0, 60).map((ticket) => {
        const c = slaClock(ticket);
        const card = el(
          "div",
          {
            class: `card ${c && c.overdue ? "overdue" : ""}`,
            "data-ticket": ticket.id,
            onclick: () => showDetail(ticket.id),
          },
          el(
            "div",
            { class: "title" },
            `${t(ticket.category)}${ticket.count > 1 ? ` ×${ticket.count}` : ""}`,
          ),
          el(
            "div",
            { class: "muted" },
            `${ticket.micro_grid_id || ticket.grid_id} · ${ticket.team}${ticket.assignee ? ` · ${ticket.assignee}` : ""}`,
          ),
          el("div", { class: "clock", "data-clock": ticket.id }, clockText(ticket)),
        );
        const actions = allowedActions(ticket);
        if (actions.length)
          card.append(el("div", { class: "actions" }, ...actions.map((a) => actionButton(ticket, a, card))));
        return card;
      }),
    );
  });
  $("board").replaceChildren(...columns);
}

function tickClocks() {
  const byId = new Map(state.tickets.map((x) => [x.id, x]));
  for (const node of document.querySelectorAll("[data-clock]")) {
    const ticket = byId.get(node.dataset.clock);
    if (ticket) node.textContent = clockText(ticket);
  }
}

async function showDetail(ticketId) {
  const box = $("detail");
  const d = await get(`/api/v1/tickets/${ticketId}`);
  const snaps = d.events.flatMap((e) => (e.evidence?.snapshots || []).map((s) => s.url)).slice(0, 6);
  const images = (urls, cls) =>
    urls.map((u) => {
      const img = el("img", { class: cls, alt: u });
      imageUrl(u)
        .then((src) => (img.src = src))
        .catch(() => {});
      return img;
    });
  // the edge box's clip of each video event (pre- and post-roll around the raise), fetched with the token
  const clips = d.events
    .map((e) => e.evidence?.clip?.url)
    .filter(Boolean)
    .map((u) => {
      const video = el("video", { class: "clip", controls: "", preload: "metadata" });
      imageUrl(u)
        .then((src) => (video.src = src))
        .catch(() => {});
      return video;
    });
  box.replaceChildren(
    el("button", { class: "secondary", onclick: () => box.classList.remove("show") }, "×"),
    el("h3", {}, `${t(d.ticket.category)} · ${t(d.ticket.status)}`),
    el("div", { class: "muted" }, `${d.ticket.id} · ${d.ticket.grid_id} · ${d.ticket.team}`),
    el("h4", {}, t("evidence")),
    el(
      "div",
      { class: "photos" },
      ...images(
        d.photos.map((p) => p.url),
        "photo",
      ),
      ...images(snaps, "snapshot"),
      ...clips,
    ),
    el(
      "ul",
      {},
      ...d.history.map((h) =>
        el(
          "li",
          { class: "muted" },
          `${new Date(h.at * 1000).toLocaleTimeString(lang())} ${h.actor} ${h.action}${h.to_status ? ` → ${t(h.to_status)}` : ""} ${h.note}`,
        ),
      ),
    ),
  );
  box.dataset.ticket = ticketId;
  box.classList.add("show");
}

// ---- live feed ----------------------------------------------------------------------------------

function feedItem(msg) {
  const ev = msg.event;
  const where = ev.location ? `${ev.location.lat.toFixed(5)},${ev.location.lon.toFixed(5)}` : ev.source;
  const li = el(
    "li",
    { class: ev.state, "data-event": ev.id, "data-kind": ev.kind },
    el("span", { class: `sev ${ev.severity}` }, t(ev.severity)),
    el(
      "div",
      {},
      el("div", {}, `${t(ev.kind)} · ${ev.micro_grid_id || ev.grid_id || ""}`),
      el(
        "div",
        { class: "muted" },
        `${where} · ${ev.source} · ${new Date(msg.at * 1000).toLocaleTimeString(lang())}`,
      ),
      ev.message ? el("div", { class: "muted" }, ev.message) : null,
    ),
  );
  const snap = ev.evidence?.snapshots?.[0]?.url;
  if (snap) {
    const img = el("img", { alt: ev.kind });
    imageUrl(snap)
      .then((u) => (img.src = u))
      .catch(() => {});
    li.prepend(img);
  }
  if (ev.location && ev.state === "active") {
    const marker = L.circleMarker(state.toMap(ev.location.lat, ev.location.lon), {
      radius: 10,
      color: "#e74c3c",
      weight: 2,
      fillOpacity: 0.1,
      className: "alert",
    }).addTo(state.alertLayer);
    setTimeout(() => state.alertLayer.removeLayer(marker), 30000);
  }
  return li;
}

const refreshSoon = debounce(() => refresh(["board", "figures", "grids"]), 400);

function startStream() {
  const badge = $("stream-state");
  const behind = $("behind");
  let behindTimer = null;
  openStream({
    backlogS: FEED_BACKLOG_S,
    onState: (s) => {
      badge.className = `stream-state ${s.state}`;
      badge.textContent =
        s.state === "live"
          ? t("live")
          : s.state === "behind"
            ? t("behind", { n: s.missed })
            : s.state === "error"
              ? t("stream_error", { d: s.detail })
              : t(s.state);
      if (s.state === "behind") {
        // the messages it lost are gone from this page: what they changed is read again
        behind.textContent = t("behind", { n: s.missed });
        behind.classList.add("show");
        refreshSoon();
        clearTimeout(behindTimer);
        behindTimer = setTimeout(() => {
          badge.className = "stream-state live";
          badge.textContent = t("live");
          behind.classList.remove("show");
        }, BEHIND_SHOWN_MS);
      } else if (s.state === "live") behind.classList.remove("show");
    },
    onMessage: (msg) => {
      const lag = Date.now() / 1000 - msg.at;
      if (msg.replayed) {
        /* from the replay ring: old by design */
      } else if (lag > BEHIND_S) {
        behind.textContent = t("behind_s", { s: Math.round(lag) });
        behind.classList.add("show");
      } else if (!badge.classList.contains("behind")) behind.classList.remove("show");
      if (msg.type === "alert") {
        const feed = $("feed");
        feed.prepend(feedItem(msg));
        while (feed.children.length > FEED_MAX) feed.lastChild.remove();
        refreshSoon();
      } else if (msg.type === "ticket") {
        refreshSoon();
        const open = $("detail");
        if (open.classList.contains("show") && open.dataset.ticket === msg.ticket.id)
          showDetail(msg.ticket.id);
      }
    },
  });
}

// a robot card's link: /#ticket=<id> opens that ticket (after sign-in)
function showLinkedTicket() {
  const m = /^#ticket=([0-9A-Za-z]+)$/.exec(location.hash);
  if (m) showDetail(m[1]).catch((err) => toast(`${m[1]}: ${err.message}`));
}

// ---- refresh ------------------------------------------------------------------------------------

async function refresh(parts) {
  const jobs = {
    figures: loadFigures,
    board: loadBoard,
    grids: async () => loadDevices(await loadGridCounts()),
    cameras: loadCameras,
    hotspots: loadHotspots,
  };
  await Promise.all(
    parts.map((p) =>
      jobs[p]().catch((err) => {
        console.error(p, err);
        if (err instanceof ApiError && err.status === 401) signOut();
        else toast(`${p}: ${err.message}`);
      }),
    ),
  );
}

async function main() {
  startI18n($("lang"));
  $("sign-out").onclick = signOut;
  $("device-grid").onchange = () => refresh(["grids"]);
  $("device-type").onchange = () => refresh(["grids"]);
  state.me = await signIn($("signin"));
  $("who").textContent = `${t("signed_in_as")} ${state.me.name} (${state.me.role})`;
  if (!state.me.can_write) $("who").textContent += ` · ${t("read_only")}`;
  await initMap();
  await refresh(["figures", "board", "grids", "cameras", "hotspots"]);
  document.body.dataset.ready = "1";
  showLinkedTicket();
  window.addEventListener("hashchange", showLinkedTicket);
  startStream();
  setInterval(tickClocks, 1000);
  setInterval(() => refresh(["figures", "grids", "board"]), 30000);
  setInterval(() => refresh(["cameras"]), 10000);
  setInterval(() => refresh(["hotspots"]), 300000);
}

main().catch((err) => toast(String(err)));
