"""Operator platforms that push device messages over HTTP: China Telecom's CTWing, China Mobile's OneNET.

Each platform's envelope is parsed here, with no I/O, into the device's own native messages
(`{prefix}/devices/{type}/{id}/up` with the raw uplink bytes or native JSON, `.../status` with
`online`/`offline`), which the gateway journals and hands to the same pipeline as MQTT: the codecs
never know how the bytes arrived. `ctwing` and `onenet` hold the envelopes, `native` the messages
and device identity they share, `dedup` the retry keys kept across restarts, `receiver` the HTTP
side (secrets, signatures, rate limits, answers, counters) and `queue` the hand-over to the pipeline.
"""
