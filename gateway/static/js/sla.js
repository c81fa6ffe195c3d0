// The SLA clock of a ticket: the timer that runs now, and how long is left (negative: overdue).

const RUNNING = {
  new: "accept_by",
  dispatched: "accept_by",
  reopened: "accept_by",
  accepted: "on_site_by",
  on_site: "resolve_by",
};

export function slaClock(ticket, nowS = Date.now() / 1000) {
  const timer = RUNNING[ticket.status];
  if (!timer) return null;
  const left = ticket[timer] - nowS;
  return { timer, left, overdue: left < 0 || (ticket.breached || []).length > 0 };
}

// Overdue first (most overdue on top), then the least time left.
export function bySla(a, b, nowS = Date.now() / 1000) {
  const ca = slaClock(a, nowS);
  const cb = slaClock(b, nowS);
  if (!ca || !cb) return (ca ? -1 : 0) + (cb ? 1 : 0);
  if (ca.overdue !== cb.overdue) return ca.overdue ? -1 : 1;
  return ca.left - cb.left;
}

// The actions a state allows, as the state machine says (the API refuses the rest).
export const ACTIONS_BY_STATE = {
  new: ["reassign", "comment", "cancel"],
  dispatched: ["accept", "arrive", "reassign", "comment", "cancel"],
  reopened: ["accept", "arrive", "reassign", "comment", "cancel"],
  accepted: ["arrive", "resolve", "reassign", "comment", "cancel"],
  on_site: ["resolve", "reassign", "comment", "cancel"],
  resolved: ["close", "reopen", "comment"],
};
