"""Model kinds that train for long (U-Net, detector): the version is reserved when training starts and its
checkpoint replaced at each evaluation, so a stop keeps the last evaluated weights as a usable Model."""

from __future__ import annotations

from collections.abc import Callable

from labelloop.errors import Cancelled, InvalidInput, NotFound
from labelloop.services.assist.models import ModelInfo, delete_model, get_model, store_file, update_model


def run_keeping_checkpoints(run: Callable[[], object], end: Callable[[str, str], ModelInfo | None],
                            stopped: Callable[[], str], unit: str) -> ModelInfo:
    """Run the training; however it ends (done, cancelled, Ctrl-C, a crash) `end(stopped_by, status)` turns the
    last checkpoint into the Model. `unit` names what must finish for there to be one ("epoch", "evaluation")."""
    try:
        run()
    except (Cancelled, KeyboardInterrupt) as exc:
        end("cancelled" if isinstance(exc, Cancelled) else "interrupted", "ready")
        raise
    except BaseException:
        end("failed", "failed")
        raise
    kept = end(stopped(), "ready")
    if kept is None:
        raise InvalidInput(f"no {unit} finished within the time budget: give more time (--time-budget)")
    return kept


def end_run(workspace, model: ModelInfo, stopped: str, status: str,
            draw: Callable[[dict, str], bytes]) -> ModelInfo | None:
    """The last checkpoint becomes the Model, with its curves drawn as a PNG blob; without one (nothing finished)
    the reserved version is removed."""
    if model.checkpoint_sha256 is None:
        delete_model(workspace, model)
        return None
    curves = {k: v for k, v in model.curves.items() if k != "png"}
    png = store_file(workspace, draw(curves, f"{model.ref} ({stopped})"))
    return update_model(workspace, model, status=status, metrics={**model.metrics, "stopped": stopped},
                        curves={**curves, "png": png})


def resumable(workspace, project, kind: str, version, unit: str) -> ModelInfo:
    """The version `--resume` names, if it has a checkpoint to continue from."""
    ref = f"{kind}:{version}" if str(version).isdigit() else str(version)
    model = get_model(workspace, project, ref, statuses=("ready", "training", "failed"))
    if model.checkpoint_sha256 is None:
        raise NotFound(f"{model.ref} has no checkpoint to resume from (it stopped before its first {unit} ended)")
    return model
