"""Time-series sinks: line protocol, InfluxDB v1/v2, embedded SQLite, and the runner feeding them."""

from gateway.sinks.base import Sink, SinkError
from gateway.sinks.influx import InfluxV1Sink, InfluxV2Sink
from gateway.sinks.lineprotocol import encode
from gateway.sinks.runner import DiskSpool, SinkRunner, backoff_delay, build_sink
from gateway.sinks.sqlite import SQLiteSink

__all__ = [
    "DiskSpool",
    "InfluxV1Sink",
    "InfluxV2Sink",
    "SQLiteSink",
    "Sink",
    "SinkError",
    "SinkRunner",
    "backoff_delay",
    "build_sink",
    "encode",
]
