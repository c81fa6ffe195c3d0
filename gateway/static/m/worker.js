// The grid worker's phone: my tickets nearest first with the SLA clock; accept, arrive (with the
// phone's position), resolve with photos and a note. Every action goes through the API.

import { $, el, toast } from "/js/dom.js";
import { ApiError, openStream, post, postForm, get } from "/js/api.js";
import { duration, startI18n, t } from "/js/i18n.js";
import { bySla, slaClock } from "/js/sla.js";
import { signIn, signOut } from "/js/signin.js";

const state = { me: null, tickets: [], here: null, openForm: null };

function metres(a, b) {
  const rad = Math.PI / 180;
  const dLat = (b.lat - a.lat) * rad;
  const dLon = (b.lon - a.lon) * rad;
  const h = Math.sin(dLat / 2) ** 2 + Math.cos(a.lat * rad) * Math.cos(b.lat * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * 6371000 * Math.asin(Math.sqrt(h));
}

function distanceOf(ticket) {
  if (!state.here || ticket.lat === null) return null;
  return metres(state.here, { lat: ticket.lat, lon: ticket.lon });
}

function watchPosition() {
  if (!navigator.geolocation) return;
  navigator.geolocation.watchPosition(
    (p) => {
      state.here = { lat: p.coords.latitude, lon: p.coords.longitude, acc: p.coords.accuracy };
      render();
    },
    () => {},
    { enableHighAccuracy: true, maximumAge: 10000 },
  );
}

async function act(ticket, action, body = {}) {
  try {
    await post(`/api/v1/tickets/${ticket.id}/${action}`, body);
    toast(t("done"), true);
    await load();
  } catch (err) {
    toast(t("refused", { d: err instanceof ApiError ? err.detail : String(err) }));
  }
}

function arriveBody() {
  const h = state.here;
  return h ? { position: { lat: h.lat, lon: h.lon, accuracy_m: h.acc } } : { note: t("no_position") };
}

// A phone camera's 12-48 MP picture is more than a fix needs and more than a street's signal
// carries: pictures longer than PHOTO_MAX_SIDE or larger than PHOTO_KEEP_BYTES go as a JPEG of
// PHOTO_MAX_SIDE pixels (turned upright). Anything the browser cannot decode goes as it is: the
// gateway judges it.
const PHOTO_MAX_SIDE = 2560;
const PHOTO_KEEP_BYTES = 1.5 * 1024 * 1024;

async function shrink(file) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch {
    return file;
  }
  const scale = Math.min(1, PHOTO_MAX_SIDE / Math.max(bitmap.width, bitmap.height));
  if (scale === 1 && file.size <= PHOTO_KEEP_BYTES) return file;
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.85));
  return blob ? new File([blob], file.name.replace(/\.\w+$/, "") + ".jpg", { type: "image/jpeg" }) : file;
}

function resolveForm(ticket) {
  const files = el("input", {
    type: "file",
    name: "photos",
    accept: "image/jpeg,image/png,image/webp",
    capture: "environment",
    multiple: "",
  });
  // what will be sent, seen before it goes (object URLs of the chosen files: nothing leaves yet)
  const previews = el("div", { class: "photos" });
  files.addEventListener("change", () => {
    for (const img of previews.querySelectorAll("img")) URL.revokeObjectURL(img.src);
    previews.replaceChildren(
      ...[...files.files].map((f) => el("img", { src: URL.createObjectURL(f), alt: f.name })),
    );
  });
  const note = el("textarea", { name: "note", placeholder: t("note") });
  const submit = el("button", { type: "submit" }, t("submit"));
  return el(
    "form",
    {
      class: "resolve-form",
      onsubmit: async (e) => {
        e.preventDefault();
        if (!files.files.length) {
          toast(t("take_photos"));
          return;
        }
        submit.disabled = true;
        try {
          const form = new FormData();
          for (const f of files.files) {
            const small = await shrink(f);
            form.append("photos", small, small.name);
          }
          form.append("note", note.value.trim());
          form.append("resolve", "true");
          await postForm(`/api/v1/tickets/${ticket.id}/photos`, form);
          state.openForm = null;
          toast(t("done"), true);
          await load();
        } catch (err) {
          submit.disabled = false;
          toast(t("refused", { d: err instanceof ApiError ? err.detail : String(err) }));
        }
      },
    },
    el("label", { class: "pick" }, t("take_photos"), files),
    previews,
    note,
    submit,
  );
}

function card(ticket) {
  const c = slaClock(ticket);
  const d = distanceOf(ticket);
  const mine = state.me.can_write;
  const actions = [];
  if (mine) {
    if (["dispatched", "reopened"].includes(ticket.status))
      actions.push(
        el("button", { "data-action": "accept", onclick: () => act(ticket, "accept") }, t("accept")),
      );
    if (["dispatched", "accepted", "reopened"].includes(ticket.status))
      actions.push(
        el(
          "button",
          { "data-action": "arrive", onclick: () => act(ticket, "arrive", arriveBody()) },
          t("arrive"),
        ),
      );
    if (["dispatched", "accepted", "on_site", "reopened"].includes(ticket.status)) {
      actions.push(
        el(
          "button",
          {
            "data-action": "resolve",
            onclick: () => {
              state.openForm = state.openForm === ticket.id ? null : ticket.id;
              render();
            },
          },
          t("resolve"),
        ),
      );
    }
  }
  return el(
    "div",
    {
      class: `mcard ${c && c.overdue ? "overdue" : ""}`,
      "data-ticket": ticket.id,
      "data-status": ticket.status,
    },
    el("div", {}, el("strong", {}, t(ticket.category)), ` · ${t(ticket.status)}`),
    el(
      "div",
      { class: "muted" },
      `${ticket.micro_grid_id || ticket.grid_id}${d === null ? "" : ` · ${t("distance", { d: d < 1000 ? `${Math.round(d)} m` : `${(d / 1000).toFixed(1)} km` })}`}`,
    ),
    c ? el("div", { class: "clock", "data-clock": ticket.id }, clockText(ticket)) : null,
    actions.length ? el("div", { class: "actions" }, ...actions) : null,
    state.openForm === ticket.id ? resolveForm(ticket) : null,
  );
}

function clockText(ticket) {
  const c = slaClock(ticket);
  if (!c) return "";
  return `${t(c.timer)} · ${c.left >= 0 ? t("due_in", { t: duration(c.left) }) : t("overdue_by", { t: duration(-c.left) })}`;
}

function render() {
  if (state.openForm && document.querySelector(".resolve-form")) return; // do not wipe a form being filled
  const list = [...state.tickets];
  list.sort((a, b) => {
    const da = distanceOf(a);
    const db = distanceOf(b);
    if (da !== null && db !== null && da !== db) return da - db;
    return bySla(a, b);
  });
  $("list").replaceChildren(
    ...(list.length ? list.map(card) : [el("div", { class: "muted" }, t("no_tickets"))]),
  );
}

async function load() {
  state.tickets = await get("/api/v1/me/tickets");
  if (state.openForm && !state.tickets.some((x) => x.id === state.openForm)) state.openForm = null;
  const form = document.querySelector(".resolve-form");
  if (form && !state.openForm) form.remove();
  render();
}

async function main() {
  startI18n($("lang"));
  $("sign-out").onclick = signOut;
  state.me = await signIn($("signin"));
  $("who").textContent = `${t("signed_in_as")} ${state.me.name} (${state.me.role})`;
  if (!state.me.can_write) {
    $("banner").textContent = t("read_only");
    $("banner").hidden = false;
  }
  watchPosition();
  await load();
  document.body.dataset.ready = "1";
  openStream({ types: "ticket", onState: () => {}, onMessage: () => load().catch(() => {}) });
  setInterval(() => {
    for (const node of document.querySelectorAll("[data-clock]")) {
      const ticket = state.tickets.find((x) => x.id === node.dataset.clock);
      if (ticket) node.textContent = clockText(ticket);
    }
  }, 1000);
  setInterval(() => load().catch(() => {}), 30000);
  if ("serviceWorker" in navigator)
    navigator.serviceWorker.register("/m/sw.js", { scope: "/m/" }).catch(() => {});
}

main().catch((err) => toast(String(err)));
