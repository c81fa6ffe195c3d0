"""Why a camera's stream does not open, in words the person at the pole can act on.

OpenCV only says "could not open". `diagnose` finds out what went wrong, cheapest check first:
the file or device is missing; the host name does not resolve; nothing listens on the port
(refused); nobody answers (timeout); then ffprobe asks the camera itself and its answer is read:
a wrong path (404), wrong credentials (401), or something that is not a video stream.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from edge.capture import redact, source_kind

DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}


class Verdict(StrEnum):
    missing_file = "missing_file"
    bad_host = "bad_host"
    refused = "refused"
    timeout = "timeout"
    not_found = "not_found"
    unauthorized = "unauthorized"
    not_a_stream = "not_a_stream"
    unknown = "unknown"


@dataclass(frozen=True, slots=True)
class Diagnosis:
    verdict: Verdict
    detail: str  # what was seen, credentials redacted
    fix: str  # what to do about it

    def __str__(self) -> str:
        return f"{self.detail}; {self.fix}"


def classify(ffprobe_error: str) -> Verdict:
    """ffmpeg's error text -> a verdict (pure; the strings are ffmpeg's own)."""
    text = ffprobe_error.lower()  # may hold a path or URL with any digits in it: match whole phrases
    if "401 unauthorized" in text or "authorization failed" in text or "401 authorization" in text:
        return Verdict.unauthorized
    if "no such file or directory" in text:
        return Verdict.missing_file
    if "404 not found" in text or "stream not found" in text:
        return Verdict.not_found
    if "connection refused" in text:
        return Verdict.refused
    if "timed out" in text or "timeout" in text:
        return Verdict.timeout
    if "failed to resolve hostname" in text or "name or service not known" in text:
        return Verdict.bad_host
    if "invalid data found" in text or "could not find codec" in text:
        return Verdict.not_a_stream
    return Verdict.unknown


def diagnose(url: str, timeout_s: float = 5.0) -> Diagnosis:
    """What is wrong with `url` (a source that did not open or gave no frame)."""
    kind = source_kind(url)
    shown = redact(url)
    if kind == "file":
        path = Path(url.removeprefix("file://"))
        if not path.exists():
            return Diagnosis(
                Verdict.missing_file,
                f"no such file: {path}",
                "check the path in cameras.yaml (a relative path starts from the folder the worker runs in)",
            )
    elif kind == "device":
        dev = url if url.startswith("/dev/") else f"/dev/video{url.split(':', 1)[-1]}"
        if not Path(dev).exists():
            return Diagnosis(
                Verdict.missing_file, f"no such device: {dev}", "is the camera plugged in? `ls /dev/video*`"
            )
    else:
        network = _reach(url, timeout_s)
        if network is not None:
            return network
    return _ask(url, shown, timeout_s)


def _reach(url: str, timeout_s: float) -> Diagnosis | None:
    """Name resolution and a TCP connect: the first two things that go wrong on site."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or DEFAULT_PORTS.get(parts.scheme.lower(), 554)
    except ValueError:
        return Diagnosis(
            Verdict.bad_host, f"bad port in {redact(url)}", "write the port as a number: host:554"
        )
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return Diagnosis(
            Verdict.bad_host,
            f"host name {host!r} does not resolve",
            "check the address, or use the camera's IP",
        )
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        try:
            s.connect(addr)
        except ConnectionRefusedError:
            return Diagnosis(
                Verdict.refused,
                f"{host}:{port} refused the connection: nothing listens there",
                "check the port (RTSP is usually 554) and that the camera's RTSP service is switched on",
            )
        except TimeoutError:
            return _timeout(f"{host}:{port} did not answer within {timeout_s:.0f} s")
        except OSError as exc:
            return Diagnosis(
                Verdict.timeout,
                f"{host}:{port} cannot be reached ({exc.strerror or exc})",
                "check the address, the network route and the firewall",
            )
    return None


def _timeout(detail: str) -> Diagnosis:
    return Diagnosis(
        Verdict.timeout, detail, "check the address, that the camera is powered, and any firewall in between"
    )


def _ask(url: str, shown: str, timeout_s: float) -> Diagnosis:
    """Let ffprobe talk to the source and read its answer."""
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        return Diagnosis(Verdict.unknown, f"{shown} did not open", "install ffmpeg (ffprobe) to find out why")
    us = str(int(timeout_s * 1_000_000))
    argv = [ffprobe, "-hide_banner", "-loglevel", "error"]
    kind = source_kind(url)
    if kind in ("rtsp", "http"):
        argv += ["-rw_timeout", us]
    if kind == "rtsp":
        argv += ["-rtsp_transport", "tcp"]
    t0 = time.monotonic()
    try:
        done = subprocess.run([*argv, url], capture_output=True, timeout=timeout_s + 5, check=False)
    except subprocess.TimeoutExpired:
        return _timeout(f"{shown} accepted the connection but sent nothing within {timeout_s:.0f} s")
    error = redact(
        done.stderr.decode("utf-8", "replace").strip().splitlines()[-1] if done.stderr.strip() else ""
    )
    if done.returncode == 0:
        return Diagnosis(
            Verdict.unknown,
            f"ffprobe reads {shown}, but OpenCV could not",
            "try `capture.backend: ffmpeg` for this camera",
        )
    verdict = classify(error)
    if verdict in (Verdict.not_a_stream, Verdict.unknown) and time.monotonic() - t0 >= timeout_s * 0.9:
        verdict = Verdict.timeout  # it waited out its timeout: an answer never came
    return _explain(verdict, url, error, timeout_s)


def _explain(verdict: Verdict, url: str, error: str, timeout_s: float) -> Diagnosis:
    shown = redact(url)
    said = f"{shown}: {error}" if error else shown
    if verdict is Verdict.unauthorized:
        parts = urlsplit(url)
        form = f"{parts.scheme}://user:password@{parts.hostname}/..."
        fix = (
            f"the user or password is wrong: check them in the URL ({form})"
            if parts.password
            else f"the camera wants a user and password: put them in the URL ({form})"
        )
        return Diagnosis(verdict, f"the camera refused the credentials ({said})", fix)
    if verdict is Verdict.not_found:
        return Diagnosis(
            verdict,
            f"the camera has no stream at that path ({said})",
            "check the path: Hikvision /Streaming/Channels/101, Dahua /cam/realmonitor?channel=1&subtype=0",
        )
    if verdict is Verdict.timeout:
        return _timeout(f"{shown} accepted the connection but did not answer within {timeout_s:.0f} s")
    if verdict is Verdict.not_a_stream:
        return Diagnosis(verdict, f"{said}: not a video ffmpeg can read", "is this the camera's video URL?")
    if verdict is Verdict.refused:
        return Diagnosis(verdict, f"{said}: refused", "check the port and the camera's streaming service")
    if verdict is Verdict.missing_file:
        return Diagnosis(verdict, said, "check the path in cameras.yaml")
    if verdict is Verdict.bad_host:
        return Diagnosis(verdict, said, "check the address, or use the camera's IP")
    return Diagnosis(verdict, f"{shown} did not open ({error or 'no reason given'})", "see the worker's log")
