"""The central service: MQTT ingest, time-series sinks, events, grid index, API."""
