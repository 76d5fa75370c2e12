"""The database schema. Change it only together with a new Alembic migration in migrations/versions."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JsonType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JsonType, list[Any]: JsonType}


class ProjectRow(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    classes: Mapped[list[Any]] = mapped_column()  # [{"name":..., "colour":...}] in order; index = position + 1
    settings: Mapped[dict[str, Any]] = mapped_column()
    seed: Mapped[int] = mapped_column(BigInteger)  # fixes the one-time shuffle of the labelling order
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class BlobRow(Base):
    __tablename__ = "blobs"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    # set for an object registered where it lies (import --by-reference) instead of being copied into the store
    url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ItemRow(Base):
    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("project_id", "blob_sha256", "page", name="uq_items_content"),
        Index("ix_items_order", "project_id", "position"),
        Index("ix_items_split", "project_id", "split"),  # stats count items per split from this index alone
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    blob_sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"))
    source: Mapped[str] = mapped_column(String(1024))  # relative name of the imported file
    page: Mapped[int] = mapped_column(Integer, default=0)  # page (TIFF) or frame (DICOM) in the source file
    format: Mapped[str] = mapped_column(String(16))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    dtype: Mapped[str] = mapped_column(String(16))
    channels: Mapped[int] = mapped_column(Integer)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata")
    split: Mapped[str] = mapped_column(String(8), default="none")
    position: Mapped[int] = mapped_column(BigInteger)  # labelling order, shuffled once
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AnnotationRow(Base):
    """One revision of what a person said about an item; rows are never updated or deleted."""

    __tablename__ = "annotations"
    __table_args__ = (UniqueConstraint("item_id", "version", name="uq_annotations_version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    author: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16), default="submitted")  # draft | submitted | accepted
    source: Mapped[str] = mapped_column(String(32), default="human")  # human | import | review
    shapes: Mapped[list[Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LatestAnnotationRow(Base):
    """An item's newest non-draft annotation revision, in brief (migration 0010): stats and the dashboard count
    these rows instead of reading every item's revisions. Triggers on `annotations` keep it in step (every
    writer, COPY included); a deleted item takes its row along."""

    __tablename__ = "latest_annotations"
    __table_args__ = (Index("ix_latest_annotations_project", "project_id", "state", "author"),)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True,
                                         autoincrement=False)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    author: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16))
    shape_count: Mapped[int] = mapped_column(Integer)  # 0: the newest revision cleared the item (not annotated)


class LatestAnnotationLabelRow(Base):
    """How many shapes of each class the item's newest non-draft revision has (migration 0010, same triggers)."""

    __tablename__ = "latest_annotation_labels"
    __table_args__ = (Index("ix_latest_annotation_labels_project", "project_id", "label"),)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True,
                                         autoincrement=False)
    label: Mapped[str] = mapped_column(String(200), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    shapes: Mapped[int] = mapped_column(Integer)


class ModelRow(Base):
    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("project_id", "kind", "version", name="uq_models_version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="ready")
    params: Mapped[dict[str, Any]] = mapped_column()
    metrics: Mapped[dict[str, Any]] = mapped_column()
    curves: Mapped[dict[str, Any]] = mapped_column()
    item_ids: Mapped[list[Any]] = mapped_column()
    checkpoint_sha256: Mapped[str | None] = mapped_column(ForeignKey("blobs.sha256"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


def _shape_count(context) -> int:
    return len(context.get_current_parameters().get("shapes") or [])


class PredictionRow(Base):
    __tablename__ = "predictions"
    __table_args__ = (Index("ix_predictions_review", "item_id", "review_state"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id", ondelete="SET NULL"), nullable=True)
    model_version: Mapped[str] = mapped_column(String(100))
    shapes: Mapped[list[Any]] = mapped_column()  # each shape carries its own score
    # len(shapes), so lists can leave out empty predictions (a classifier's "no class reached its threshold")
    shape_count: Mapped[int] = mapped_column(Integer, default=_shape_count, server_default="0")
    # when reviewed: pre-labels accepted as they were, adjusted (with their IoU), rejected, and shapes added
    effort: Mapped[dict[str, Any] | None] = mapped_column(JsonType, nullable=True)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)  # item-level confidence
    review_state: Mapped[str] = mapped_column(String(16), default="pending")  # pending|accepted|edited|rejected
    reviewer: Mapped[str | None] = mapped_column(String(200), nullable=True)
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PredictionDismissalRow(Base):
    """One shape of a prediction that a user rejected while labelling its item (kept per user: blind overlap)."""

    __tablename__ = "prediction_dismissals"
    __table_args__ = (UniqueConstraint("prediction_id", "shape_index", "user_name", name="uq_prediction_dismissals"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prediction_id: Mapped[int] = mapped_column(ForeignKey("predictions.id", ondelete="CASCADE"), index=True)
    shape_index: Mapped[int] = mapped_column(Integer)
    user_name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_state", "state"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), nullable=True)
    kind: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), default="queued")  # queued|running|done|failed|cancelled
    params: Mapped[dict[str, Any]] = mapped_column()
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    done: Mapped[int] = mapped_column(BigInteger, default=0)
    total: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    log: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)  # "host:pid" while running
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


# --- server: users, roles, tokens, sessions, work queue, reviews (migration 0002) ---


class UserRow(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(200), nullable=True)  # argon2; None: tokens only
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class MembershipRow(Base):
    """A user's role in one project: owner, manager, annotator or reviewer."""

    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("project_id", "user_id", name="uq_memberships_user"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiTokenRow(Base):
    """A bearer token for scripts; only the SHA-256 of the secret is stored."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # the first characters, to tell tokens apart in lists
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class WebSessionRow(Base):
    """A browser login: the cookie's SHA-256 and the CSRF token unsafe requests must echo."""

    __tablename__ = "web_sessions"
    __table_args__ = (Index("ix_web_sessions_expiry", "expires_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AssignmentRow(Base):
    """Who works on which item: a lease (expires), done, or skipped. One row per (item, user).

    `slot` (0 .. overlap-1) is set while the assignment counts towards the item's overlap; the unique
    (item, slot) pair is the database's own guard against handing one slot to two annotators."""

    __tablename__ = "assignments"
    __table_args__ = (
        UniqueConstraint("item_id", "user_id", name="uq_assignments_user"),
        UniqueConstraint("item_id", "slot", name="uq_assignments_slot"),
        Index("ix_assignments_lease", "project_id", "state", "expires_at"),
        Index("ix_assignments_user", "user_id", "state"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    slot: Mapped[int | None] = mapped_column(Integer, nullable=True)
    state: Mapped[str] = mapped_column(String(16))  # leased | done | skipped
    leased_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class QueueItemRow(Base):
    """An item the work queue may still hand out (migration 0004): `next` reads this short list in the project's
    order instead of scanning past every finished item.

    Triggers keep it in step with the tables other code writes: a new item joins; an imported or accepted
    annotation settles the item and takes it out. The queue service takes an item out when its last slot is
    leased and puts it back when a lease expires, a slot is given up or a reviewer sends it back for rework."""

    __tablename__ = "queue_items"
    __table_args__ = (
        Index("ix_queue_items_shuffled", "project_id", "position", "item_id"),
        Index("ix_queue_items_sequential", "project_id", "item_id"),
        Index("ix_queue_items_ranked", "project_id", "rank", "position", "item_id"),
    )
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True,
                                         autoincrement=False)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(BigInteger)  # the item's `position`, copied for an index-only order
    # The item's place in the project's sampling strategy's order (migration 0007, services/assist/sampling.py):
    # written when ranks are refreshed after a model; NULL (last) for an item that came back since.
    rank: Mapped[int | None] = mapped_column(Integer, nullable=True)


class ItemStackRow(Base):
    """The stack an item belongs to and its slice in it (migration 0011, services/labelling/stack_order.py): pages of
    one multi-page file, files of one DICOM series, or numbered slices of one folder. Worked out once per item, so
    the `nearest-labelled` queue order re-ranks one stack after a label without reading the items' sources."""

    __tablename__ = "item_stacks"
    __table_args__ = (Index("ix_item_stacks_stack", "project_id", "stack", "slice"),)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True,
                                         autoincrement=False)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    stack: Mapped[str] = mapped_column(String(64))  # SHA-1 of "file:SOURCE", "series:UID" or "numbered:PATTERN"
    slice: Mapped[int] = mapped_column(Integer)


class ItemRankRow(Base):
    """An item's place in one sampling strategy's order under one model version (migration 0007): computed once
    after a model is trained or predicts, so `next` reads a rank instead of scoring the pool per request."""

    __tablename__ = "item_ranks"
    __table_args__ = (UniqueConstraint("item_id", "model_version", "strategy", name="uq_item_ranks"),
                      Index("ix_item_ranks_project", "project_id", "strategy", "model_version"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    model_version: Mapped[str] = mapped_column(String(200))  # the model's ref, e.g. "classifier:v3"
    strategy: Mapped[str] = mapped_column(String(64))
    rank: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReviewRow(Base):
    """A reviewer's verdict on one submitted annotation revision (accept, edit, reject)."""

    __tablename__ = "reviews"
    __table_args__ = (UniqueConstraint("annotation_id", name="uq_reviews_annotation"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    annotation_id: Mapped[int] = mapped_column(ForeignKey("annotations.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(16))
    reviewer: Mapped[str] = mapped_column(String(200))
    result_annotation_id: Mapped[int | None] = mapped_column(
        ForeignKey("annotations.id", ondelete="SET NULL"), nullable=True)
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class EmbeddingRow(Base):
    """An item's pooled features from one encoder: computed once, reused by clusters and classifiers."""

    __tablename__ = "embeddings"
    __table_args__ = (UniqueConstraint("item_id", "encoder", name="uq_embeddings_item_encoder"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    encoder: Mapped[str] = mapped_column(String(200))  # timm model name, plus @sha256 prefix of a local weights file
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32, little-endian
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SuspectRow(Base):
    """An item that a quality check put up for review (migration 0008): a label that looks wrong, a duplicate,
    an outlier or bad image, or an auto-accepted pre-label drawn for a spot-check. A person's decision (`state`)
    outlives re-scoring as long as what it was made on (`basis`) is unchanged."""

    __tablename__ = "suspects"
    __table_args__ = (UniqueConstraint("project_id", "kind", "item_id", "check", name="uq_suspects_item_check"),
                      Index("ix_suspects_list", "project_id", "kind", "score"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # label | duplicate | outlier | spot_check
    check: Mapped[str] = mapped_column(String(64))  # which test: label; exact/perceptual/semantic; knn/blur/...
    score: Mapped[float] = mapped_column(Float)  # higher = review first
    reason: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column()
    group_key: Mapped[str | None] = mapped_column(String(64), nullable=True)  # duplicates: the group it belongs to
    basis: Mapped[str] = mapped_column(String(64))  # fingerprint of what it was scored on
    active: Mapped[bool] = mapped_column(Boolean, default=True)  # False: the last run no longer flags it
    state: Mapped[str] = mapped_column(String(16), default="open")  # open | kept | fixed | dropped | excluded
    decided_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ItemCheckRow(Base):
    """What the image checks measured on an item (migration 0008): computed once per item, so a new quality run
    decodes only the items added since."""

    __tablename__ = "item_checks"
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True,
                                         autoincrement=False)
    phash: Mapped[int] = mapped_column(BigInteger)
    measures: Mapped[dict[str, Any]] = mapped_column()  # ml.outliers.ImageChecks: blur, dark, bright, ...
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class QualityRunRow(Base):
    """The fingerprint of the inputs of a project's last run of one check (migration 0008): an unchanged
    fingerprint means nothing to re-score."""

    __tablename__ = "quality_runs"
    __table_args__ = (UniqueConstraint("project_id", "kind", name="uq_quality_runs"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    fingerprint: Mapped[str] = mapped_column(String(64))
    summary: Mapped[dict[str, Any]] = mapped_column()
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
