"""`gridgate gateway --role dispatch`: the lead dispatcher, and its standbys.

Any number may run; one leads, the one that holds the `leader` advisory lock (gateway/cluster/
leases.py). The others wait for it. The leader is a gateway in the dispatch role (gateway/service.py):
it takes the ingest replicas' event changes from its broker session, decides alert hygiene,
publishes the alert and maintenance topics, keeps the event log and runs the ticket desk, its SLA
timers, webhooks, robots and the API. When it dies its lock goes with its database connection;
a standby takes the lead, rebuilds the desk from the ticket database and connects to the same
broker session, which holds every change the old leader had not acknowledged.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg

from gateway.cluster.leases import Leases
from gateway.service import Gateway
from gridgate.config import GatewayConfig
from gridgate.topics import Topics

log = logging.getLogger("gridgate.cluster")


def lead(
    cfg: GatewayConfig,
    stop: threading.Event,
    log_level: str = "info",
    on_lead: Callable[[Gateway], None] | None = None,
) -> str | None:
    """Wait for the lead, then run the dispatch gateway until `stop` is set or the lead is lost;
    `on_lead` is given the running gateway (for an embedding program or a test).

    Returns None after a clean stop, else why it stopped (the caller exits non-zero: restart it)."""
    leases = Leases(cfg.cluster.url(), Topics(cfg.broker.topic_prefix).prefix)
    try:
        waiting = False
        while not leases.try_lock("leader", 0):
            if not waiting:
                log.info("event=dispatcher_standby reason='another dispatcher leads'")
                waiting = True
            if stop.wait(cfg.cluster.lease_check_s):
                return None
        log.info("event=dispatcher_leading")
        gateway = Gateway(cfg, role="dispatch", log_level=log_level).start(wait_for_broker_s=0)
        if on_lead is not None:
            on_lead(gateway)
        try:
            while not stop.wait(cfg.cluster.lease_check_s):
                try:
                    leases.ping()
                except psycopg.Error as exc:
                    log.error(
                        "event=dispatcher_lost_lead error=%r fix='restart it: another one may lead now'",
                        exc,
                    )
                    return f"lost the database connection that holds the lead: {exc}"
        finally:
            gateway.stop()
        return None
    finally:
        leases.close()
