"""`config/cameras.yaml`: the edge box, its broker, its model and its cameras with their zones.

One pydantic model per concern, each field described, so this file is the reference of the YAML
and errors name the field. Environment variables `GRIDGATE_EDGE_*` override the file's top-level
scalars and nested broker keys (`GRIDGATE_EDGE_BROKER__HOST`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import SettingsConfigDict

from detectors.tracking import TrackerConfig
from detectors.zones import Zone
from gridgate.config import ConfigError, EnvFirstSettings, TLSConfig, describe_validation_error, read_yaml
from gridgate.models import Location

ENV_PREFIX = "GRIDGATE_EDGE_"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EdgeBrokerConfig(Strict):
    """`broker:`: where events, evidence and stats go."""

    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    tls: TLSConfig = TLSConfig()
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = Field(None, description="file holding the password (Docker/K8s secret)")
    client_id: str | None = Field(None, max_length=64, description="default `gridgate-edge-<edge_id>`")
    topic_prefix: str = Field("gridgate", pattern=r"^[^#+/][^#+]*$")
    keepalive_s: int = Field(
        30, ge=5, description="also how soon the LWT `offline` fires after a crash (x1.5)"
    )
    reconnect_max_s: float = Field(30.0, gt=0, description="cap of the exponential backoff between connects")

    def secret(self) -> str | None:
        if self.password_file is not None:
            return self.password_file.read_text(encoding="utf-8").strip()
        return self.password.get_secret_value() if self.password is not None else None


class PublisherConfig(Strict):
    """`publisher:`: the disk queue and the message rate."""

    queue_max_bytes: int = Field(
        512 * 1024 * 1024,
        ge=1024 * 1024,
        description="disk queue cap while the broker is away; beyond it the oldest evidence pictures go "
        "first, then the oldest messages (counted, logged)",
    )
    inflight: int = Field(50, ge=1, le=1000, description="messages sent and not yet acknowledged at once")
    update_min_s: float = Field(5.0, ge=0, description="at most one `update` per event this often")
    update_max_s: float = Field(60.0, gt=0, description="at least one `update` per active event this often")
    stats_interval_s: float = Field(
        30.0, gt=0, description="how often per-camera stats go to the status topic"
    )
    snapshot_every_s: float = Field(
        10.0,
        ge=0,
        description="send each camera's latest analysed frame, with what the detector saw drawn on it, "
        "at most this often (retained JPEG on `{p}/edge/{edge_id}/frames/{camera_id}`; the gateway "
        "serves it at /api/v1/cameras/{camera_id}/frame); 0: never",
    )


class ClipConfig(Strict):
    """`evidence.clip:`: a short MP4 around the moment an event is raised (its pre- and post-roll)."""

    enabled: bool = Field(True, description="record a `clip.mp4` for the events of `kinds`")
    kinds: list[str] = Field(
        ["illegal_parking"], description="event kinds that get a clip (camera faults never do)"
    )
    pre_s: float = Field(10.0, ge=0, le=120, description="seconds of video before the event is raised")
    post_s: float = Field(10.0, ge=0, le=120, description="seconds of video after the event is raised")
    max_width: int = Field(
        640,
        ge=160,
        le=1920,
        description="the clip ring keeps each frame the capture delivers (at `decode_fps`) scaled down to "
        "at most this width and JPEG-compressed in memory, so its RAM stays small",
    )
    jpeg_quality: int = Field(70, ge=30, le=95, description="of the frames held in the clip ring")
    ring_max_bytes: int = Field(
        32 * 1024 * 1024,
        ge=256 * 1024,
        description="RAM the clip ring of one camera may take; beyond it the oldest frames go (the ring "
        "also keeps no more than pre_s + post_s + 1 seconds)",
    )
    encode_timeout_s: float = Field(60.0, gt=0, description="ffmpeg encoding one clip longer than this fails")


class EvidenceConfig(Strict):
    """`evidence:`: snapshots kept on the edge box and sent with events."""

    max_bytes: int = Field(
        2 * 1024**3,
        ge=1024 * 1024,
        description="evidence kept on disk; beyond it whole event folders are deleted: those of ended "
        "events first (oldest first), then the oldest of open events",
    )
    max_age_days: float = Field(
        30.0, gt=0, description="event folders untouched for longer than this are deleted"
    )
    clip: ClipConfig = ClipConfig()
    jpeg_quality: int = Field(85, ge=30, le=100)
    max_width: int = Field(
        1280, ge=160, le=7680, description="pictures wider than this are scaled down before encoding"
    )
    ring_frames: int = Field(
        4,
        ge=2,
        le=64,
        description="recent analysed frames kept per camera to picture the moment a vehicle stopped",
    )
    send: bool = Field(True, description="publish the pictures over MQTT (else only their references)")


class FeedbackConfig(Strict):
    """`feedback:`: frames kept on the box to correct and retrain the model (`gridgate detectors dataset`)."""

    enabled: bool = Field(
        False,
        description="keep frames around events and borderline detections, each with its detections in a "
        "JSON sidecar, and mark those of tickets ended as false alarms",
    )
    dir: Path | None = Field(None, description="where the frames go; default `{data_dir}/feedback`")
    max_mb: float = Field(
        1024.0, gt=0, description="disk the frames and sidecars may take; the oldest are deleted beyond it"
    )
    max_files: int = Field(5000, ge=1, description="frames kept at most; the oldest are deleted beyond it")
    events: bool = Field(
        True,
        description="keep the frames around each event: where it began (a vehicle came to rest), "
        "where it was raised (`new`, a parking dwell exceeded) and where it ended",
    )
    borderline_low: float | None = Field(
        0.15,
        ge=0,
        le=1,
        description="least score of a borderline detection: one between this and its label's "
        "`model.min_score`, which the rules never see; null: keep no borderline frames",
    )
    borderline_every_s: float = Field(
        60.0, gt=0, description="keep at most one borderline frame per camera this often (frame time)"
    )
    jpeg_quality: int = Field(
        92, ge=50, le=100, description="of the kept frames, drawn on nothing: they are training images"
    )
    listen_tickets: bool = Field(
        True,
        description="subscribe to `{topic_prefix}/tickets/#` and mark the frames of events whose ticket "
        "ended with `resolution: false_alarm` (sidecar `false_alarm: true`)",
    )


class ModelConfig(Strict):
    """`model:` (one detector shared by every camera of the box), or one entry of `models:`."""

    name: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="names the model in `cameras[].models`, stats and logs; default the file's stem",
    )
    path: Path = Field(
        Path("detectors/weights/street.pt"),
        description="weights ultralytics loads: .pt (PyTorch), .onnx (ONNX Runtime), "
        "*_openvino_model/ (OpenVINO)",
    )
    backend: Literal["pytorch", "onnx", "openvino"] | None = Field(
        None,
        description="inference runtime: `pytorch`, `onnx` (ONNX Runtime) or `openvino` (Intel CPUs); "
        "a .pt is exported to it once (cached under var/models); default: what the file is",
    )
    imgsz: int | tuple[int, int] = Field(
        640,
        description="inference size; [height, width] matches the shape an ONNX/OpenVINO export was made at",
    )
    device: str = Field("cpu", description="`cpu`, `0` (first CUDA GPU), ...")
    max_batch: int = Field(4, ge=1, le=64, description="frames from different cameras inferred in one call")
    class_map: dict[str, str] = Field(
        {},
        description="model class name -> gridgate label (vehicle, water, bin, garbage, bin_overflow), "
        "over the built-in map (COCO car/truck/bus/motorcycle -> vehicle, ...); map to `ignore` to drop one",
    )
    unmapped: Literal["keep", "ignore"] = Field(
        "keep",
        description="classes in neither map: `keep` them under their own name, or `ignore` them "
        "(a COCO model's person, dog, ...)",
    )
    min_score: dict[str, float] = Field({}, description="per-label least score, e.g. {vehicle: 0.4}")
    min_area_ratio: dict[str, float] = Field(
        {}, description="per-label least box area, fraction of the frame"
    )
    threads: int | None = Field(
        None, ge=1, le=256, description="CPU threads for inference; default all cores"
    )

    @property
    def label(self) -> str:
        """The model's name: `name`, else the weights file's stem."""
        return self.name or self.path.stem


KEYFRAME_STALL_S = 30.0  # capture.stall_s for key-frame cameras that do not set it


class CaptureConfig(Strict):
    """`capture:` of a camera: how frames are read."""

    backend: Literal["ffmpeg", "opencv"] = Field(
        "ffmpeg",
        description="`ffmpeg`: a subprocess decimates and scales before Python sees a frame (cheapest, "
        "and decoding runs beside the interpreter); `opencv`: VideoCapture's FFmpeg backend in-process",
    )
    decode_fps: float = Field(
        5.0, gt=0, le=60, description="frames per second handed to the motion gate (the rest are skipped)"
    )
    width: int | None = Field(
        None, ge=64, le=7680, description="scale frames to this width before Python (ffmpeg); None: as is"
    )
    keyframes_only: bool = Field(
        False,
        description="decode only key frames (ffmpeg `-skip_frame nokey`), one per GOP (often 1-4 s): "
        "for cameras that watch slow things (ponding, bins), a fraction of the decoding; needs backend "
        "ffmpeg; stall_s defaults to 30 then, since a key frame may come 2-3 GOPs late",
    )
    rtsp_transport: Literal["tcp", "udp"] = Field("tcp", description="RTSP over TCP survives lossy links")
    open_timeout_s: float = Field(10.0, gt=0, description="give up opening a stream after this long")
    read_timeout_s: float = Field(10.0, gt=0, description="give up a blocked read after this long")
    stall_s: float = Field(
        10.0, gt=0, description="watchdog: reopen a stream that delivered no frame this long"
    )
    reconnect_min_s: float = Field(0.5, gt=0, description="first wait before reopening; doubles each failure")
    reconnect_max_s: float = Field(
        8.0, gt=0, description="cap of the wait between reopen attempts (a camera is back within it)"
    )
    loop: bool = Field(False, description="files only: start again at the end (demo, soak)")
    realtime: bool = Field(
        True,
        description="files only: deliver frames at the file's own rate like a camera; false: as fast as "
        "the worker takes them, none skipped (tests)",
    )
    start_offset_s: float = Field(
        0.0, ge=0, description="files only: start this far into the file (staggers looped demo/bench cameras)"
    )
    decode_threads: int = Field(
        1,
        ge=0,
        le=64,
        description="decoder threads per stream; 1 is cheapest once a box has more streams than cores; "
        "0: the decoder's own choice (one fast 4K stream)",
    )
    start_time: float | None = Field(
        None, description="files only: epoch seconds of the file's first frame; default the time it opened"
    )

    @model_validator(mode="after")
    def _backoff(self) -> CaptureConfig:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must not exceed reconnect_max_s")
        if self.keyframes_only:
            if self.backend != "ffmpeg":
                raise ValueError("keyframes_only needs backend: ffmpeg (OpenCV decodes every frame)")
            if "stall_s" not in self.model_fields_set:  # streams with B-frames hold key frames back
                self.stall_s = KEYFRAME_STALL_S
        return self


class MotionConfig(Strict):
    """`motion:` of a camera: the cheap gate in front of the detector."""

    enabled: bool = Field(True, description="false: run the detector at detect_fps all the time")
    pixel_threshold: int = Field(
        25, ge=1, le=255, description="grey-level change that marks a pixel as moved"
    )
    min_area_ratio: float = Field(
        0.002, ge=0, le=1, description="fraction of the 320x180 picture that must change to count as motion"
    )
    hold_s: float = Field(1.0, ge=0, description="keep detecting this long after motion stops")


class HealthConfig(Strict):
    """Camera health checks (edge/camera_health.py): faults a maintenance team receives."""

    enabled: bool = Field(True, description="false: no camera health faults for this camera")
    sample_s: float = Field(2.0, gt=0, description="frame time between two checks")
    warmup_checks: int = Field(
        5, ge=1, description="checks that learn the camera's look before any judgement"
    )
    bad_checks: int = Field(3, ge=1, description="bad checks in a row before a fault is raised")
    good_checks: int = Field(3, ge=1, description="good checks in a row before it clears (cool-down)")
    lost_after_s: float = Field(20.0, gt=0, description="camera_lost after this long without a frame")
    frozen_after_s: float = Field(
        60.0, gt=0, description="camera_frozen after a bit-identical picture this long"
    )
    dark_below: float = Field(25.0, ge=0, le=255, description="obscured: mean grey below this and ...")
    flat_below: float = Field(8.0, ge=0, description="... grey standard deviation below this")
    contrast_ratio: float = Field(
        0.35,
        gt=0,
        lt=1,
        description="obscured (besides dark): grey deviation below this x the baseline's and ...",
    )
    one_colour_share: float = Field(
        0.8, gt=0, le=1, description="obscured: one grey level covers this share (while normally it does not)"
    )
    entropy_ratio: float = Field(
        0.45, gt=0, lt=1, description="obscured: entropy below this x the baseline's"
    )
    min_entropy_bits: float = Field(
        2.5, ge=0, description="a scene below this entropy is not judged by entropy"
    )
    blur_ratio: float = Field(
        0.2, gt=0, lt=1, description="blurred: Laplacian variance below this x the baseline's"
    )
    crisp_ratio: float = Field(
        0.35, gt=0, lt=1, description="... and the edges' crispness below this x the baseline's"
    )
    min_sharpness: float = Field(30.0, ge=0, description="a scene flatter than this is not judged for blur")
    moved_share: float = Field(
        0.04, gt=0, lt=1, description="moved: the view shifted by this share of the frame"
    )
    min_response: float = Field(
        0.05, ge=0, le=1, description="phase-correlation peak needed to trust a shift"
    )
    day_starts: int = Field(
        7, ge=0, le=23, description="local hour the day baseline starts (IR cameras switch)"
    )
    night_starts: int = Field(19, ge=0, le=24, description="local hour the night baseline starts")


class PlatesConfig(Strict):
    """Licence plates of vehicles parked in the camera's no_parking zones, read when a vehicle becomes a
    candidate and again when its dwell is exceeded (never on every frame)."""

    enabled: bool | None = Field(
        None,
        description="read plates; default: on where rapidocr-onnxruntime is installed (gridgate[edge]) "
        "and the camera has a no_parking zone",
    )
    min_confidence: float = Field(
        0.9,
        ge=0,
        le=1,
        description="a read is reported only if its least sure character scores this much; below it the "
        "event carries no plate (bench/plate_eval.py tunes it: wrong plates at this bar stay under 1 %)",
    )
    min_plate_width_px: int = Field(
        80,
        ge=8,
        description="a plate narrower than this on the frame is not reported (bench/plate_eval.py: under "
        "80 px few read and 4 % read wrong), nor is a vehicle narrower than it read at all",
    )


class CameraConfig(Strict):
    """One entry of `cameras:`."""

    id: str = Field(
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$", description="appears in events"
    )
    url: str = Field(
        description="rtsp://..., http(s)://..., a file path, or a device: /dev/video0 or `device:0`",
        min_length=1,
    )
    enabled: bool = True
    location: Location = Field(description="where the camera looks, {lat, lon}; zones may set their own")
    timezone: str | None = Field(None, description="for active hours; default the box's `timezone`")
    detect_fps: float = Field(2.0, gt=0, le=30, description="analyses per second while something moves")
    refresh_s: float = Field(
        10.0, gt=0, description="analyse at least this often when nothing moves (parked cars, puddles, bins)"
    )
    capture: CaptureConfig = CaptureConfig()
    motion: MotionConfig = MotionConfig()
    tracking: TrackerConfig = TrackerConfig()
    models: list[str] | None = Field(
        None,
        min_length=1,
        description="names of the `models:` this camera's frames go through; default all of them",
    )
    zones: list[Zone] = Field([], description="no_parking, ponding and bin_overflow regions")
    health: HealthConfig = Field(
        HealthConfig(), description="lost, frozen, obscured, blurred and moved camera faults"
    )
    plates: PlatesConfig = Field(PlatesConfig(), description="licence plates on illegal_parking events")

    @field_validator("zones")
    @classmethod
    def _unique(cls, zones: list[Zone]) -> list[Zone]:
        names = [z.name for z in zones]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"zone names must be unique within a camera: {', '.join(dup)} repeated")
        return zones


class EdgeConfig(EnvFirstSettings):
    """`config/cameras.yaml`: one edge box."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        nested_model_default_partial_update=True,
    )

    edge_id: str = Field(
        "edge-1",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="names this box in topics",
    )
    timezone: str = Field("UTC", description="IANA zone for active hours, e.g. Asia/Shanghai")
    data_dir: Path = Field(Path("var/edge"), description="disk queue and evidence pictures")
    broker: EdgeBrokerConfig = EdgeBrokerConfig()
    publisher: PublisherConfig = PublisherConfig()
    evidence: EvidenceConfig = EvidenceConfig()
    model: ModelConfig = Field(
        ModelConfig(), description="the one detector of the box; for several use `models:` instead"
    )
    models: list[ModelConfig] = Field(
        [],
        description="several detectors, each with its own weights, class map, thresholds and size, run "
        "on the same frames; their detections are merged before tracking (e.g. a COCO model for "
        "vehicles beside a model for water, bins and garbage)",
    )
    merge_iou: float = Field(
        0.5,
        gt=0,
        le=1,
        description="with several models: boxes of the same label overlapping this much (IoU) are one "
        "object, the higher score kept",
    )
    inference_threads: int | None = Field(
        None,
        ge=1,
        le=16,
        description="copies of the models that infer at once, each on its share of a batch; default 2 "
        "on a box with 2 or more cores, else 1: a second copy keeps both cores of a 2-core box on "
        "inference where the streets never rest (bench/edge.py: 7 busy cameras against 5); each copy "
        "costs its model's memory (30 MB of RSS for the shipped model on OpenVINO)",
    )
    feedback: FeedbackConfig = FeedbackConfig()
    cameras: list[CameraConfig] = Field([], description="the streams this box watches")

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        _zone(v)
        return v

    @model_validator(mode="after")
    def _cameras(self) -> EdgeConfig:
        ids = [c.id for c in self.cameras]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"camera ids must be unique: {', '.join(dup)} repeated")
        for c in self.cameras:
            if c.timezone is not None:
                _zone(c.timezone)
        if self.models and "model" in self.model_fields_set:
            raise ValueError("give either `model:` (one model) or `models:` (a list), not both: move the "
                             "`model:` section into the `models:` list")  # fmt: skip
        names = [m.label for m in self.model_list]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(
                f"models[].name must be unique: {', '.join(dup)} repeated (set `name:` on each model)"
            )
        for i, c in enumerate(self.cameras):
            unknown = [m for m in c.models or [] if m not in names]
            if unknown:
                raise ValueError(
                    f"cameras[{i}].models: {', '.join(unknown)} is not a model of this box "
                    f"(the models are: {', '.join(names)})"
                )
        return self

    @property
    def model_list(self) -> list[ModelConfig]:
        """Every model of the box: `models:`, else the one `model:`."""
        return self.models or [self.model]

    @property
    def max_batch(self) -> int:
        """Frames from different cameras analysed together (each model batches within it)."""
        return max(m.max_batch for m in self.model_list)

    @property
    def client_id(self) -> str:
        return self.broker.client_id or f"gridgate-edge-{self.edge_id}"

    def tz(self, camera: CameraConfig) -> ZoneInfo:
        return _zone(camera.timezone or self.timezone)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"unknown time zone {name!r}: use an IANA name such as Asia/Shanghai or UTC"
        ) from exc


def load_edge_config(path: str | Path | None, **overrides: Any) -> EdgeConfig:
    """Load cameras.yaml; errors name the file, the field path (`cameras[0].zones[1].points`) and the fix."""
    data: Any = {}
    if path is not None:
        data = read_yaml(path) or {}
        if not isinstance(data, dict):
            raise ConfigError(path, ["top level must be a mapping (edge_id:, broker:, model:, cameras:)"])
    data.update(overrides)
    try:
        cfg = EdgeConfig(**data)
    except ValidationError as exc:
        raise describe_validation_error(path or "environment", exc) from exc
    if path is not None:
        base = Path(path).resolve().parent.parent
        cfg = cfg.model_copy(
            update={
                "model": _beside(cfg.model, base),
                "models": [_beside(m, base) for m in cfg.models],
            }
        )
    return cfg


def _beside(model: ModelConfig, base: Path) -> ModelConfig:
    """A relative weights path that is not found from here but is from the repo root (config/..)."""
    mp = model.path
    if not mp.is_absolute() and not mp.exists() and (base / mp).exists():
        return model.model_copy(update={"path": base / mp})
    return model
