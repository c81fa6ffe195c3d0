"""`gridgate edge probe` tells apart what goes wrong on site, against real servers: a camera that
answers 404 or 401 (HTTP and RTSP), nothing listening, a host that accepts and says nothing, a name
that does not resolve, a missing file, a file that is not a video."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.diagnose import Verdict, classify, diagnose
from tests.servers import free_port

pytestmark = pytest.mark.integration


class _Camera(http.server.BaseHTTPRequestHandler):
    """An MJPEG camera's web server that knows no stream and wants a password under /auth."""

    def do_GET(self) -> None:
        if self.path.startswith("/auth"):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="camera"')
        else:
            self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def http_camera() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Camera)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture
def mute_port() -> Iterator[int]:
    """Listens, never accepts, never speaks (a hung camera or a port a firewall swallows)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(0)
    filler = socket.create_connection(s.getsockname())  # fills the backlog: later connects hang
    yield s.getsockname()[1]
    filler.close()
    s.close()


def test_each_failure_has_its_own_plain_words(http_camera: int, mute_port: int, tmp_path: Path) -> None:
    text = tmp_path / "cam-401-404.txt"  # digits that look like answers
    text.write_text("not a video\n")
    cases = {
        f"http://127.0.0.1:{http_camera}/video.mjpg": (Verdict.not_found, "no stream at that path"),
        f"http://127.0.0.1:{http_camera}/auth/video.mjpg": (
            Verdict.unauthorized,
            "wants a user and password",
        ),
        f"http://admin:wrong@127.0.0.1:{http_camera}/auth/v.mjpg": (
            Verdict.unauthorized,
            "password is wrong",
        ),
        f"rtsp://127.0.0.1:{free_port()}/cam": (Verdict.refused, "nothing listens there"),
        f"rtsp://127.0.0.1:{mute_port}/cam": (Verdict.timeout, "did not answer within 2 s"),
        "rtsp://camera-17.invalid/Streaming/Channels/101": (Verdict.bad_host, "does not resolve"),
        str(tmp_path / "missing.mp4"): (Verdict.missing_file, "no such file"),
        str(text): (Verdict.not_a_stream, "not a video"),
    }
    for url, (verdict, words) in cases.items():
        d = diagnose(url, timeout_s=2.0)
        assert (d.verdict, words in str(d)) == (verdict, True), (url, str(d))
        assert "wrong@" not in str(d)  # credentials never printed


def test_the_cli_says_it_in_plain_words_and_fails(http_camera: int) -> None:
    url = f"http://admin:secret@127.0.0.1:{http_camera}/auth/video.mjpg"
    done = subprocess.run(
        [sys.executable, "-m", "gridgate", "edge", "probe", url, "--timeout", "3"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    out = done.stdout + done.stderr
    assert "the user or password is wrong" in out and "secret" not in out


def test_an_rtsp_camera_with_a_wrong_path_is_not_found(tmp_path: Path) -> None:
    from tests.integration.test_edge_rtsp import RTSPCamera, _gst_ready, make_clip

    why = _gst_ready()
    if why:
        pytest.skip(why)
    with RTSPCamera(tmp_path, make_clip(tmp_path / "clip.mp4", seconds=5)) as cam:
        d = diagnose(cam.url.replace("/cam", "/Streaming/Channels/101"), timeout_s=5.0)
    assert d.verdict is Verdict.not_found, str(d)


@pytest.mark.parametrize(
    ("ffmpeg_says", "verdict"),
    [
        ("rtsp://10.0.0.21:554/x: method DESCRIBE failed: 401 Unauthorized", Verdict.unauthorized),
        ("http://c/x: Server returned 401 Unauthorized (authorization failed)", Verdict.unauthorized),
        ("rtsp://10.0.0.21:554/x: method DESCRIBE failed: 404 Not Found", Verdict.not_found),
        ("http://c/x: Server returned 404 Not Found", Verdict.not_found),
        ("rtsp://10.0.0.21:554/x: Connection refused", Verdict.refused),
        ("http://c/x: Connection timed out", Verdict.timeout),
        ("/srv/a.mp4: No such file or directory", Verdict.missing_file),
        ("Failed to resolve hostname cam: Name or service not known", Verdict.bad_host),
        ("/etc/hostname: Invalid data found when processing input", Verdict.not_a_stream),
        ("something new", Verdict.unknown),
        # digits in a path are not an answer (a CI run's /tmp/pytest-of-root/pytest-401/ was)
        ("/tmp/pytest-401/cam-404.txt: Invalid data found when processing input", Verdict.not_a_stream),
        ("rtsp://10.0.0.40:554/Streaming/Channels/401: Connection refused", Verdict.refused),
    ],
)
def test_ffmpeg_error_lines_are_read(ffmpeg_says: str, verdict: Verdict) -> None:
    assert classify(ffmpeg_says) is verdict
