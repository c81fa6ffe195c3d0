"""Operator platforms and network servers: their envelopes unwrapped into what the codecs decode.

`lorawan` reads ChirpStack's and The Things Stack's MQTT JSON. CTWing and China Mobile's OneNET
push over HTTP: `ctwing` and `onenet` parse their envelopes, with no I/O, into the device's own
native messages (`{prefix}/devices/{type}/{id}/up` with the raw uplink bytes or native JSON,
`.../status` with `online`/`offline`), which the gateway journals and hands to the same pipeline
as MQTT; `native` holds those messages and the device identity both share, `dedup` the retry keys
kept across restarts, `receiver` the HTTP side (secrets, signatures, rate limits, answers,
counters) and `queue` the hand-over to the pipeline.
"""
