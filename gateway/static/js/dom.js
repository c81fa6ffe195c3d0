// Small DOM helpers shared by the dashboard and the grid worker's page.

export const $ = (id) => document.getElementById(id);

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

export function toast(text, ok = false) {
  const box = $("toast");
  box.textContent = text;
  box.classList.toggle("ok", ok);
  box.classList.add("show");
  setTimeout(() => box.classList.remove("show"), 6000);
}
