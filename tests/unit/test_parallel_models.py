"""`inference_threads`: copies of the models infer their shares of a batch at the same time, and the
results come back in the frames' order."""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence

import numpy as np
import pytest

from detectors.ensemble import ModelSet
from detectors.model import Detection
from edge import scheduler
from edge.config import load_edge_config
from edge.scheduler import ParallelModels, inference_copies


class Marker:
    """A model that 'detects' the number painted on each frame, and waits at a barrier shared by
    every copy: if the copies ran one after another, the first would wait alone and fail."""

    def __init__(self, name: str, barrier: threading.Barrier, seen: list[tuple[str, int]]) -> None:
        self.name, self.version = name, f"{name}@test"
        self.barrier, self.seen = barrier, seen

    def detect(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        self.barrier.wait(timeout=10)
        out = []
        for f in frames:
            k = int(f[0, 0, 0])
            self.seen.append((threading.current_thread().name, k))
            out.append([Detection("vehicle", k / 100, (0.1, 0.1, 0.2, 0.2), "car")])
        return out


def frames(n: int) -> list[np.ndarray]:
    return [np.full((4, 4, 3), i, np.uint8) for i in range(n)]


@pytest.mark.parametrize("n", [2, 3, 4, 7])
def test_copies_infer_at_once_and_results_keep_the_frames_order(n: int) -> None:
    barrier = threading.Barrier(2)
    seen: list[tuple[str, int]] = []
    par = ParallelModels([ModelSet([Marker("street", barrier, seen)]) for _ in range(2)])
    got = par.detect(frames(n))
    assert [round(d[0].score * 100) for d in got] == list(range(n))
    threads = {name for name, _ in seen}
    assert len(threads) == 2 and all(t.startswith("inference") for t in threads)
    assert par.versions == {"street": "street@test"}


def test_one_frame_needs_one_copy_and_use_is_split_with_the_frames() -> None:
    class Named:
        def __init__(self, name: str) -> None:
            self.name, self.version = name, "v"

        def detect(self, fs: list[np.ndarray]) -> list[list[Detection]]:
            return [
                [Detection("water" if self.name == "w" else "bin", 0.9, (0, 0, 1, 1), self.name)] for _ in fs
            ]

    par = ParallelModels([ModelSet([Named("w"), Named("b")]) for _ in range(2)])
    use: Sequence[Collection[str] | None] = [{"w"}, {"b"}, None]
    labels = [sorted(d.label for d in dets) for dets in par.detect(frames(3), use)]
    assert labels == [["water"], ["bin"], ["bin", "water"]]
    assert [d.label for d in par.detect(frames(1), [{"b"}])[0]] == ["bin"]


def test_inference_threads_is_checked() -> None:
    assert load_edge_config(None, inference_threads=2).inference_threads == 2
    with pytest.raises(Exception, match="inference_threads"):
        load_edge_config(None, inference_threads=0)


def test_two_copies_by_default_on_two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    assert [inference_copies(None, cores) for cores in (1, 2, 4, 16)] == [1, 2, 2, 2]
    assert inference_copies(3, 1) == 3 and inference_copies(1, 16) == 1  # as configured
    loaded: list[ModelSet] = []
    barrier = threading.Barrier(1)

    def one_set(cfg: object) -> ModelSet:
        loaded.append(ModelSet([Marker("m", barrier, [])]))
        return loaded[-1]

    monkeypatch.setattr(scheduler, "load_model_set", one_set)
    monkeypatch.setattr(scheduler.os, "cpu_count", lambda: 2)
    models = scheduler.load_models(load_edge_config(None))
    assert isinstance(models, ParallelModels) and models.copies == loaded and len(loaded) == 2
    assert scheduler.load_models(load_edge_config(None, inference_threads=1)) is loaded[-1]
