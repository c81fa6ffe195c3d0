"""A tiny RTSP camera for tests: GStreamer's RTSP server playing an H.264 MP4 file.

Runs under Debian's /usr/bin/python3 (python3-gi, gir1.2-gst-rtsp-server-1.0,
gstreamer1.0-plugins-good), not the project's venv:

    /usr/bin/python3 tests/integration/edge_rtsp_server.py PORT FILE [MOUNT]

Every client gets its own pipeline from the start of the file (not shared), so a reconnecting
reader sees frames again at once.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    port, path = sys.argv[1], sys.argv[2]
    mount = sys.argv[3] if len(sys.argv) > 3 else "/cam"
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f'( filesrc location="{path}" ! qtdemux ! rtph264pay name=pay0 pt=96 config-interval=1 )'
    )
    factory.set_shared(False)
    server.get_mount_points().add_factory(mount, factory)
    if server.attach(None) == 0:
        sys.exit(f"could not listen on 127.0.0.1:{port}")
    print(f"rtsp://127.0.0.1:{port}{mount} serving {path}", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
