// The grid worker page's service worker: the page itself opens without a network (network first,
// the cached copy when the street has no signal). API calls are never cached: tickets, actions
// and photos always go to the gateway.

const CACHE = "gridgate-m-v2";
const SHELL = [
  "/m/",
  "/m/worker.js",
  "/m/manifest.webmanifest",
  "/m/icon-192.png",
  "/js/api.js",
  "/js/dom.js",
  "/js/i18n.js",
  "/js/sla.js",
  "/js/signin.js",
  "/css/app.css",
];

self.addEventListener("install", (e) => {
  e.waitUntil(
    caches
      .open(CACHE)
      .then((c) => c.addAll(SHELL))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (e) => {
  e.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (e) => {
  const url = new URL(e.request.url);
  if (e.request.method !== "GET" || url.origin !== location.origin || url.pathname.startsWith("/api/"))
    return;
  e.respondWith(
    fetch(e.request)
      .then((res) => {
        const copy = res.clone();
        if (res.ok) caches.open(CACHE).then((c) => c.put(e.request, copy));
        return res;
      })
      .catch(() => caches.match(e.request)),
  );
});
