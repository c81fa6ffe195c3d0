// The pages' only way to the gateway: the REST API with the bearer token, and the stream.
// Every request passes the API's own role checks; the pages never decide what a role may do.

const TOKEN_KEY = "gridgate.token";

export class ApiError extends Error {
  constructor(status, detail, path) {
    super(`${status} ${path}: ${detail}`);
    this.status = status;
    this.detail = detail;
    this.path = path;
  }
}

export const session = {
  get token() {
    return localStorage.getItem(TOKEN_KEY) || "";
  },
  set token(value) {
    if (value) localStorage.setItem(TOKEN_KEY, value);
    else localStorage.removeItem(TOKEN_KEY);
  },
};

function headers(extra = {}) {
  const h = { ...extra };
  if (session.token) h.Authorization = `Bearer ${session.token}`;
  return h;
}

async function check(res, path) {
  if (res.ok) return res;
  let detail = res.statusText;
  try {
    detail = (await res.json()).detail ?? detail;
  } catch {
    /* not JSON: keep the status text */
  }
  throw new ApiError(res.status, typeof detail === "string" ? detail : JSON.stringify(detail), path);
}

export async function get(path) {
  const res = await fetch(path, { headers: headers() });
  return (await check(res, path)).json();
}

export async function post(path, body = {}) {
  const res = await fetch(path, {
    method: "POST",
    headers: headers({ "Content-Type": "application/json" }),
    body: JSON.stringify(body),
  });
  return (await check(res, path)).json();
}

export async function postForm(path, form) {
  const res = await fetch(path, { method: "POST", headers: headers(), body: form });
  return (await check(res, path)).json();
}

// An image behind the bearer token (camera frames, snapshots, photos): <img> cannot send one.
const blobs = new Map();
export async function imageUrl(path) {
  const res = await fetch(path, { headers: headers(), cache: "no-cache" });
  await check(res, path);
  const url = URL.createObjectURL(await res.blob());
  const old = blobs.get(path);
  if (old) URL.revokeObjectURL(old);
  blobs.set(path, url);
  return url;
}

// The live stream: authenticates with its first message (no token in the URL), starts with the
// last `backlogS` seconds the gateway's replay ring holds, resumes after the last message it got,
// reconnects with capped backoff, and reports its state. A message from the ring (sent before
// the stream caught up with now) has `replayed: true`.
export function openStream({ onMessage, onState, types = "", backlogS = 0 }) {
  let lastId = null;
  let liveFrom = Infinity;
  let delay = 500;
  let ws = null;
  let stopped = false;
  let pingTimer = null;

  function connect() {
    const params = new URLSearchParams();
    if (types) params.set("types", types);
    if (lastId !== null) params.set("since_id", String(lastId));
    else if (backlogS > 0) params.set("since", new Date(Date.now() - backlogS * 1000).toISOString());
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    ws = new WebSocket(`${scheme}://${location.host}/api/v1/stream?${params}`);
    onState({ state: "connecting" });
    ws.onopen = () => {
      if (session.token) ws.send(JSON.stringify({ type: "auth", token: session.token }));
      pingTimer = setInterval(() => ws.readyState === 1 && ws.send('{"type":"ping"}'), 20000);
    };
    ws.onmessage = (e) => {
      const msg = JSON.parse(e.data);
      if (msg.type === "hello") {
        delay = 500;
        liveFrom = msg.last_id;
        onState({ state: "live", who: msg.who });
        return;
      }
      if (msg.type === "dropped") {
        onState({ state: "behind", missed: msg.count });
        return;
      }
      if (msg.type === "error") {
        onState({ state: "error", detail: msg.detail, status: msg.status });
        return;
      }
      if (typeof msg.id === "number") lastId = msg.id;
      onMessage({ ...msg, replayed: typeof msg.id === "number" && msg.id <= liveFrom });
    };
    ws.onclose = (e) => {
      clearInterval(pingTimer);
      if (stopped || e.code === 4401) {
        if (e.code === 4401) onState({ state: "error", detail: e.reason, status: 401 });
        return;
      }
      onState({ state: "reconnecting", in_ms: delay });
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 15000);
    };
  }
  connect();
  return {
    close() {
      stopped = true;
      ws?.close();
    },
  };
}
