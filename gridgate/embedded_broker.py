"""An MQTT broker inside the demo process (amqtt), so `gridgate demo` needs no server installed."""

from __future__ import annotations

import asyncio
import logging
import threading

from amqtt.broker import Broker

log = logging.getLogger("gridgate.broker")


class EmbeddedBroker:
    """amqtt on its own event loop in a daemon thread; anonymous, loopback only by default."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host, self.port = host, port
        self._loop = asyncio.new_event_loop()
        self._broker: Broker | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="gridgate-broker", daemon=True)

    def start(self, timeout_s: float = 10.0) -> EmbeddedBroker:
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self._thread.start()
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }

        async def _start() -> Broker:
            broker = Broker(config)
            await broker.start()
            return broker

        try:
            self._broker = asyncio.run_coroutine_threadsafe(_start(), self._loop).result(timeout_s)
        except Exception as exc:
            raise RuntimeError(
                f"the embedded MQTT broker could not listen on {self.host}:{self.port} ({exc}); "
                "free the port or pass --mqtt-port"
            ) from exc
        log.info("event=broker_started url=mqtt://%s:%d", self.host, self.port)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._broker is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop).result(timeout_s)
            except Exception:  # shutting down: log and go on
                log.exception("event=broker_stop_failed")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout_s)
