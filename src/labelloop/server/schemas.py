"""Request and response bodies: the OpenAPI schema the UI and scripts are tested against."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Finite = Annotated[float, Field(allow_inf_nan=False, ge=-1e9, le=1e9)]
Label = Annotated[str, StringConstraints(min_length=1, max_length=100)]
# Class names in project requests: the service checks them (limit 100) and says what is wrong in words
ClassName = Annotated[str, StringConstraints(min_length=1, max_length=10_000)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Version = Annotated[int, Field(ge=0, le=2**31 - 1)]
Rle = Annotated[str, StringConstraints(pattern=r"^[0-o]*$", max_length=20_000_000)]  # COCO's compressed RLE alphabet
ProjectKindName = Literal["classification", "multilabel", "detection", "instance", "semantic"]
RoleName = Literal["owner", "manager", "annotator", "reviewer"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- shapes (pixel coordinates, origin at the top-left corner of the top-left pixel; see docs/api.md) ---


class _Shape(Strict):
    label: Label
    attributes: dict[str, Any] = Field(default_factory=dict)


class ClassShape(_Shape):
    type: Literal["class"]


class BoxShape(_Shape):
    type: Literal["box"]
    x0: Finite
    y0: Finite
    x1: Finite
    y1: Finite


class PolygonShape(_Shape):
    type: Literal["polygon"]
    parts: list[Annotated[list[tuple[Finite, Finite]], Field(min_length=3, max_length=100_000)]] = Field(
        min_length=1, max_length=1000)


class MaskShape(_Shape):
    type: Literal["mask"]
    size: tuple[Annotated[int, Field(ge=1, le=1_000_000)], Annotated[int, Field(ge=1, le=1_000_000)]]
    counts: Rle


class ScribbleShape(_Shape):
    type: Literal["scribble"]
    size: tuple[Annotated[int, Field(ge=1, le=1_000_000)], Annotated[int, Field(ge=1, le=1_000_000)]]
    counts: Rle


ShapeIn = Annotated[Union[ClassShape, BoxShape, PolygonShape, MaskShape, ScribbleShape], Field(discriminator="type")]


# --- auth and users ---


class LoginIn(Strict):
    name: Name
    password: Annotated[str, StringConstraints(min_length=1, max_length=1000)]


class UserOut(BaseModel):
    id: int
    name: str
    is_admin: bool
    active: bool


class LoginOut(BaseModel):
    user: UserOut
    csrf_token: str


class TokenIn(Strict):
    name: Name = Field(description="What the token is for, e.g. 'training script'.")
    user: Name | None = Field(None, description="With `password`: log in and create the token in one call.")
    password: Annotated[str, StringConstraints(min_length=1, max_length=1000)] | None = None


class TokenOut(BaseModel):
    id: int
    name: str
    prefix: str
    created_at: str
    revoked_at: str | None
    token: str | None = Field(None, description="The secret; shown once, when the token is created.")


class UserIn(Strict):
    name: Name
    password: Annotated[str, StringConstraints(min_length=8, max_length=1000)] | None = None
    admin: bool = False


class MemberIn(Strict):
    role: RoleName


class MemberOut(BaseModel):
    user: str
    role: str


# --- projects, items, annotations ---


class ClassOut(BaseModel):
    name: str
    index: int
    colour: str


class ProjectIn(Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    kind: ProjectKindName
    classes: list[ClassName] = Field(default_factory=list, max_length=1000)
    colours: list[Annotated[str, StringConstraints(pattern=r"^#[0-9A-Fa-f]{6}$")]] = Field(default_factory=list, max_length=1000)
    settings: dict[str, Any] = Field(default_factory=dict)


Colour = Annotated[str, StringConstraints(pattern=r"^#[0-9A-Fa-f]{6}$")]


class ProjectPatch(Strict):
    add_classes: list[ClassName] = Field(default_factory=list, max_length=1000, description="Classes appended to the schema.")
    class_colours: dict[Label, Colour] = Field(default_factory=dict, description="New #RRGGBB colours by class name.")
    rename_classes: dict[Label, ClassName] = Field(default_factory=dict, description=(
        "Old name -> new name; refused (409) for a class that an annotation or prediction uses."))
    remove_classes: list[Label] = Field(default_factory=list, max_length=1000, description=(
        "Classes dropped from the schema; refused (409) when used, or once the project has a model."))
    settings: dict[str, Any] = Field(default_factory=dict, description="target_precision, sampling, overlap, lease_seconds")


class ProjectOut(BaseModel):
    id: int
    name: str
    kind: str
    classes: list[ClassOut]
    settings: dict[str, Any]
    role: str | None = None


class ItemOut(BaseModel):
    id: int
    project_id: int
    source: str
    page: int
    format: str
    width: int
    height: int
    dtype: str
    channels: int
    metadata: dict[str, Any]
    split: str
    state: str = Field(description="unlabelled, submitted or accepted: the newest non-draft annotation's state")
    version: int = Field(description="the item's newest annotation version (0: none)")


class AnnotationIn(Strict):
    shapes: list[ShapeIn] = Field(max_length=100_000)
    base_version: Version = Field(description="The version you started from (0: none); a stale one gets 409.")
    state: Literal["draft", "submitted"] = "submitted"


class AnnotationOut(BaseModel):
    id: int
    item_id: int
    version: int
    author: str
    state: str
    source: str
    shapes: list[dict[str, Any]]
    created_at: str


class ItemDetail(BaseModel):
    item: ItemOut
    annotation: AnnotationOut | None = Field(description="What to show: the newest revision you may see, drafts included")
    base_version: int = Field(description="Send this as base_version with your next save")
    image_levels: int


class NextOut(BaseModel):
    item: ItemOut | None
    annotation: AnnotationOut | None = None
    base_version: int = 0
    lease_expires_at: str | None = None
    message: str = ""


class ReviewIn(Strict):
    action: Literal["accept", "edit", "reject"]
    shapes: list[ShapeIn] | None = Field(None, max_length=100_000, description="The corrected shapes (edit only).")
    base_version: Version | None = Field(None, description="Predictions: the item's annotation version you saw.")


class AnnotationReviewIn(Strict):
    action: Literal["accept", "edit", "reject"]
    version: Version = Field(description="The submitted version you reviewed.")
    shapes: list[ShapeIn] | None = Field(None, max_length=100_000)
    comment: Annotated[str, StringConstraints(max_length=10_000)] = ""


class VerdictOut(BaseModel):
    action: str
    reviewer: str
    reviewed_at: str
    annotation: AnnotationOut | None


class PredictionOut(BaseModel):
    id: int
    item_id: int
    model_id: int | None
    model_version: str
    shapes: list[dict[str, Any]]
    score: float | None
    review_state: str
    reviewer: str | None
    reviewed_at: str | None
    created_at: str
    dismissed: list[int] = Field(default_factory=list, description="Indexes of the shapes you rejected while labelling.")
    effort: dict[str, Any] | None = Field(None, description=(
        "Once reviewed: pre-labels shown, accepted as they were, adjusted (adjusted_iou), rejected, and shapes added"))


class DismissIn(Strict):
    shapes: list[Annotated[int, Field(ge=0, le=100_000)]] = Field(min_length=1, max_length=100_000, description=(
        "Indexes (from 0) of the prediction's shapes to hide from you for good."))


# --- models and jobs ---


class TrainIn(Strict):
    model: Annotated[str, StringConstraints(min_length=1, max_length=100)] = Field(description="Model kind, e.g. pixel-rf")
    params: dict[str, Any] = Field(default_factory=dict, description="Model parameters, as `labelloop train --set`.")


class PredictIn(Strict):
    model: Annotated[str, StringConstraints(min_length=1, max_length=100)] = Field(description="kind or kind:version")
    split: Literal["train", "val", "test", "none"] | None = None
    all: bool = Field(False, description="Predict every item (default: items without annotations).")
    items: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] | None = Field(
        None, max_length=100_000, description="Predict these items (smart prediction on chosen images).")
    params: dict[str, Any] = Field(default_factory=dict)


class JobOut(BaseModel):
    id: int
    kind: str
    state: str
    project_id: int | None
    done: int
    total: int | None
    message: str
    error: str | None
    result: dict[str, Any]
    params: dict[str, Any]
    created_at: str | None
    started_at: str | None
    finished_at: str | None


class ErrorOut(BaseModel):
    detail: str
    current: Any | None = None


def shape_dicts(shapes: list[ShapeIn]) -> list[dict[str, Any]]:
    return [s.model_dump(exclude_defaults=False) for s in shapes]
