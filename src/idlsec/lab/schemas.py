"""The lab's HTTP contract as pydantic models; FastAPI turns them into the OpenAPI schema that
``web/src/api/openapi.json`` commits and the TypeScript client is generated from."""

from __future__ import annotations

import math
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Upper bounds keep one request from occupying the engine for hours; the CLI has no such limits.
MAX_EPS = 0.5
MAX_STEPS = 10_000
MAX_UPLOAD_BYTES = 4 * 1024 * 1024
MAX_QUEUED = 32
MAX_BATCH_IMAGES = 1000
MAX_QUERIES = 50_000
MAX_UPLOAD_PIXELS = 4096  # per side; read from the file's header, before decoding
MAX_BODY_BYTES = 1024 * 1024  # a JSON request

# The one table of upper bounds on what sets a job's cost, wherever the value enters: a request's
# own field (``Field(le=...)`` below) or its ``params`` (``check_limits``). Steps of every stage,
# population, queries, images.
LIMITS: dict[str, int] = {
    "steps": MAX_STEPS, "warmup_steps": MAX_STEPS, "mi_steps": MAX_STEPS, "mask_inner_steps": 100,
    "mask_bisection": 100, "init_rounds": 100, "pop_size": 1000, "max_queries": MAX_QUERIES,
    "square_queries": MAX_QUERIES, "prune_start": MAX_QUERIES, "prune_patience": MAX_STEPS,
    "mask_grid": 256, "n": MAX_BATCH_IMAGES, "batch_size": 256,
}


def check_limits(values: dict, where: str = "params") -> None:
    """ValueError naming the first value of ``values`` beyond ``LIMITS`` (or not a number)."""
    for key, value in values.items():
        hi = LIMITS.get(key)
        if hi is None or value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{where}.{key} must be a number in 0..{hi}, got {value!r}")
        if not 0 <= value <= hi:
            raise ValueError(f"{where}.{key} = {value:g} is beyond the lab's limit 0..{hi}")

Name = Field(min_length=1, max_length=200)
ParamValue = bool | int | float | str | None
JobState = Literal["queued", "running", "done", "failed", "cancelled", "interrupted"]


class _Strict(BaseModel):
    """A request: unknown fields refused, and JSON types taken as the schema states them: a number
    field takes no string or boolean, a boolean field nothing else (pydantic's lax mode would take
    "1" and true for 1; strict mode would refuse 2.0, an integer in JSON Schema)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _json_types(cls, data):
        if not isinstance(data, dict):
            return data
        for name, field in cls.model_fields.items():
            if name not in data:
                continue
            types, value = set(get_args(field.annotation) or (field.annotation,)), data[name]
            if bool in types and not isinstance(value, bool) and value is not None:
                raise ValueError(f"{name} must be a boolean, got {value!r}")
            if types & {int, float} and bool not in types and isinstance(value, (bool, str)):
                raise ValueError(f"{name} must be a number, got {value!r}")
        return data


class _Limited(_Strict):
    """A job request: its ``params`` are held to ``LIMITS`` like its own fields."""

    @model_validator(mode="after")
    def _params_within_limits(self):
        check_limits(self.params)
        return self


# --- registry ----------------------------------------------------------------------------------
class ModelInfo(BaseModel):
    name: str = Field(description="what the lab calls the model (its spec unless the models file names it)")
    spec: str = Field(description="the model spec it is loaded from (zoo name, torchvision:<arch>, ...)")
    dataset: str | None = Field(None, description="what its weights were trained on; None: a user model")
    datasets: list[str] = Field(description="image sources besides uploads: its built-in dataset and its "
                                            "image folders (folder:<name>); empty: uploads only")
    num_classes: int
    input_size: list[int] = Field(description="C, H, W; uploads and folder images are resized to it")
    cam_layer: str | None = None
    accuracy: float | None = None
    notes: str = ""
    weights: str | None = Field(None, description="the weights file name given to the lab, or 'random'")
    classes: list[str] | None = Field(None, description="class names, when the model has them")


class DatasetInfo(BaseModel):
    name: str
    classes: list[str] = Field(description="class names; empty when the data is not available locally")
    size: int = Field(description="images in the lab's split (test); 0 when not available")
    error: str | None = None


class ParamInfo(BaseModel):
    """One attack hyperparameter, from :func:`idlsec.attacks.params.param_info` (bounds tightened
    to the lab's ``LIMITS``)."""

    name: str
    default: ParamValue = None
    kind: Literal["bool", "int", "float", "choice", "string"]
    help: str = Field("", description="one line: what the parameter does")
    unit: str | None = Field(None, description='"1/255": a pixel budget or step, sent in [0, 1] units')
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    max_exclusive: bool = False
    choices: list[str] | None = None
    advanced: bool = Field(False, description="folded away in forms")
    nullable: bool = Field(False, description="None (the default) is a valid value")
    none_means: str | None = Field(None, description="what None stands for")


class AttackInfo(BaseModel):
    name: str
    doc: str = ""
    needs_interpreter: bool = False
    black_box: bool = False
    params: list[ParamInfo]


class InterpreterInfo(BaseModel):
    name: str
    doc: str = ""
    differentiable: bool = True
    stochastic: bool = False


class Registry(BaseModel):
    version: str
    device: str
    models: list[ModelInfo]
    datasets: list[str]
    interpreters: list[InterpreterInfo]
    attacks: list[AttackInfo]
    limits: dict[str, float]


class DatasetImage(BaseModel):
    dataset: str
    index: int
    label: int
    label_name: str | None = None
    image: str = Field(description="PNG data URL")


# --- uploads -----------------------------------------------------------------------------------
class Upload(BaseModel):
    id: str
    filename: str
    width: int
    height: int
    image: str = Field(description="PNG data URL of the decoded image")


# --- jobs --------------------------------------------------------------------------------------
class AttackRequest(_Limited):
    model: str = Name
    dataset: str | None = Field(None, max_length=200,
                                description="one of the model's datasets (ModelInfo.datasets); default: "
                                            "its first; ignored with upload")
    index: int | None = Field(None, ge=0, description="image index in the dataset's test split")
    upload: str | None = Field(None, max_length=64, description="id returned by POST /api/uploads")
    interpreter: str = Name
    attack: str = Name
    eps: float = Field(8 / 255, gt=0, le=MAX_EPS, description="L∞ budget in [0, 1] pixel units")
    steps: int | None = Field(None, ge=1, le=LIMITS["steps"])
    alpha: float | None = Field(None, gt=0, le=MAX_EPS)
    targeted: bool = True
    target: int | None = Field(None, ge=0, description="target class; default: a seeded random class")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    params: dict[str, ParamValue] = Field(default_factory=dict, description="other attack hyperparameters")
    surrogate: str | None = Field(None, max_length=200,
                                  description="black-box attacks: the attacker's local white-box model; "
                                              "default: another zoo model trained on the same dataset")


class BatchRequest(_Limited):
    model: str = Name
    interpreter: str = Name
    attack: str = Name
    n: int = Field(8, ge=1, le=LIMITS["n"], description="seeded, correctly classified test images")
    eps: float = Field(8 / 255, gt=0, le=MAX_EPS)
    steps: int | None = Field(None, ge=1, le=LIMITS["steps"])
    alpha: float | None = Field(None, gt=0, le=MAX_EPS)
    targeted: bool = True
    seed: int = Field(0, ge=0, le=2**31 - 1)
    params: dict[str, ParamValue] = Field(default_factory=dict)
    surrogate: str | None = Field(None, max_length=200)
    batch_size: int = Field(32, ge=1, le=LIMITS["batch_size"])


class BatchResult(BaseModel):
    job: str
    run_id: str = Field(description="the run's id in GET /api/runs")
    path: str
    summary: dict[str, float | str | bool | None]


class CompareRequest(_Strict):
    interpreters: list[str] = Field(min_length=1, max_length=16)


class Progress(BaseModel):
    done: int = 0
    total: int = 0
    fraction: float = 0.0
    message: str = ""


class JobStatus(BaseModel):
    id: str
    kind: Literal["attack", "compare", "batch"]
    state: JobState
    progress: Progress
    error: str | None = None
    label: str = Field(description="a one-line description for the queue view")
    created: float
    started: float | None = None
    finished: float | None = None
    position: int | None = Field(None, description="place in the queue (0 = next) while queued")


class Prediction(BaseModel):
    label: int
    name: str
    confidence: float


class MapData(BaseModel):
    width: int
    height: int
    values: list[float] = Field(description="row-major, min-max normalised to [0, 1]")


class AttackResultOut(BaseModel):
    job: str
    model: str
    dataset: str | None
    index: int | None
    upload: str | None
    interpreter: str
    attack: str
    targeted: bool
    params: dict[str, ParamValue]
    classes: list[str]
    true_label: int | None
    attacked_label: int = Field(description="the target (targeted) or the true/predicted label attacked")
    benign: Prediction
    adversarial: Prediction
    success: bool
    benign_image: str
    adversarial_image: str
    perturbation_image: str
    perturbation_scale: float
    benign_map: MapData | None
    adversarial_map: MapData | None
    metrics: dict[str, float | None]
    iou_topk: dict[str, float]
    queries: float | None = None
    query_history: list[float] | None = Field(None, description="queries spent after each step, if known")
    loss_history: list[float]
    seconds: float
    surrogate: str | None = None


class InterpreterComparison(BaseModel):
    interpreter: str
    benign_map: MapData | None = None
    adversarial_map: MapData | None = None
    metrics: dict[str, float | None] = Field(default_factory=dict)
    error: str | None = None


class CompareResult(BaseModel):
    job: str
    source: str
    comparisons: list[InterpreterComparison]


# --- runs --------------------------------------------------------------------------------------
class RunInfo(BaseModel):
    id: str
    path: str
    n_records: int
    summary: dict[str, float | str | bool | None]
    config: dict[str, float | str | bool | None]
    images: list[str]
    has_queries: bool


class RunDetail(RunInfo):
    records: list[dict[str, float | str | bool | None | list[float]]]
    truncated: bool = False


class RunExample(BaseModel):
    position: int = Field(description="row of the run's records (attack runs) or `pos` (bench configurations)")
    label: int | None = Field(None, description="the attacked label (the target, when targeted)")
    pred: int | None = None
    benign_image: str
    adversarial_image: str
    perturbation_image: str
    benign_map: MapData | None = None
    adversarial_map: MapData | None = None


class RunExamples(BaseModel):
    id: str
    config: str | None = Field(None, description="the bench configuration shown (bench stores)")
    configs: list[str] = Field(description="bench configurations with saved galleries")
    examples: list[RunExample]


class Message(BaseModel):
    detail: str
