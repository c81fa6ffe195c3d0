"""The ffmpeg capture's filter chain: decimation, bilinear scaling and showinfo without checksums
(the cheaper chain; bench/edge.py's decode row runs the same one)."""

from __future__ import annotations

import pytest

from edge import capture
from edge.capture import ffmpeg_filters
from edge.config import CaptureConfig


def test_filters_decimate_scale_bilinear_and_skip_checksums(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capture, "_showinfo_checksum_option", lambda: True)
    chain = ffmpeg_filters(CaptureConfig(decode_fps=5, width=960))
    assert chain == "fps=5,scale=960:-2:flags=bilinear,showinfo=checksum=0"
    assert ffmpeg_filters(CaptureConfig(keyframes_only=True, backend="ffmpeg")) == "showinfo=checksum=0"


def test_an_ffmpeg_without_the_option_keeps_plain_showinfo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capture, "_showinfo_checksum_option", lambda: False)
    assert ffmpeg_filters(CaptureConfig(decode_fps=2)).endswith(",showinfo")


@pytest.mark.skipif(capture.FFMPEG is None, reason="ffmpeg is not installed")
def test_this_ffmpeg_is_asked_not_assumed() -> None:
    capture._showinfo_checksum_option.cache_clear()
    assert capture._showinfo_checksum_option()  # Debian 12's 5.1 has it (FFmpeg 4.4+)
