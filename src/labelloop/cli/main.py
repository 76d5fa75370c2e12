"""`labelloop` command line. Heavy libraries are imported inside commands so start-up stays fast."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Turn raw images into labelled training data.")
project_app = typer.Typer(no_args_is_help=True, help="Create, list and show projects.")
jobs_app = typer.Typer(no_args_is_help=True, help="List, show and cancel background jobs.")
app.add_typer(project_app, name="project")
app.add_typer(jobs_app, name="jobs")
from labelloop.cli.common import DataDir, JsonFlag, err, open_workspace, out, parse_pairs, print_json, run_job_here  # noqa: E402


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("labelloop")
        except PackageNotFoundError:  # run from a source tree that was never installed
            from labelloop import __version__ as number
        out.print(f"labelloop {number}")
        raise typer.Exit()


@app.callback()
def _root(show_version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                            help="Print labelloop's version and exit.")) -> None:
    """Turn raw images into labelled training data."""
    from labelloop.ml.allocator import keep_freed_memory

    keep_freed_memory()  # the forward passes and forests reuse freed memory (see ml/allocator.py)

@app.command()
def init(data_dir: Optional[Path] = DataDir) -> None:
    """Create a workspace (database and blob store) in a folder."""
    from labelloop.services.workspace import Workspace

    workspace = Workspace.init(data_dir or os.environ.get("LABELLOOP_DATA_DIR"))
    out.print(f"workspace ready at {workspace.root} ({workspace.backend})")


@project_app.command("create")
def project_create(
    name: str,
    kind: str = typer.Option(..., "--kind", help="classification, multilabel, detection, instance or semantic"),
    classes: str = typer.Option("", "--classes", help="Comma-separated class names, in order (may come from the first import)."),
    colours: str = typer.Option("", "--colours", help="Comma-separated #RRGGBB colours for the classes."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Create a project."""
    from labelloop.services.projects import create_project

    workspace = open_workspace(data_dir)
    names = [c for c in classes.split(",") if c.strip()] if classes else []
    with workspace.session() as session:
        project = create_project(session, name, kind, names, [c for c in colours.split(",") if c] or None)
    if as_json:
        print_json(project.to_dict())
    else:
        out.print(f"created {project.kind.value} project {project.name!r} with {len(project.classes)} classes")


@project_app.command("list")
def project_list(data_dir: Optional[Path] = DataDir, as_json: bool = JsonFlag) -> None:
    """List projects."""
    from labelloop.services.projects import list_projects

    workspace = open_workspace(data_dir)
    with workspace.session() as session:
        projects = list_projects(session)
    if as_json:
        print_json([p.to_dict() for p in projects])
        return
    table = Table("name", "kind", "classes")
    for p in projects:
        table.add_row(p.name, p.kind.value, ", ".join(p.class_names()))
    out.print(table if projects else "no projects yet: create one with `labelloop project create NAME --kind KIND`")


@project_app.command("show")
def project_show(name: str, data_dir: Optional[Path] = DataDir, as_json: bool = JsonFlag) -> None:
    """Show a project's kind, classes, settings and counts."""
    from labelloop.services.projects import get_project
    from labelloop.services.data.stats import project_stats

    workspace = open_workspace(data_dir)
    with workspace.session() as session:
        project = get_project(session, name)
    stats = project_stats(workspace, name)
    if as_json:
        print_json({**project.to_dict(), "stats": stats})
        return
    out.print(f"[bold]{project.name}[/bold]  {project.kind.value}  {stats['items']} items, {stats['annotated_items']} annotated")
    table = Table("#", "class", "colour", "shapes")
    for c in project.classes:
        table.add_row(str(c.index), c.name, f"[{c.colour}]■[/] {c.colour}", str(stats["shapes_per_class"].get(c.name, 0)))
    out.print(table)
    out.print("settings: " + ", ".join(f"{k}={v}" for k, v in project.settings.items()))


@project_app.command("set")
def project_set(
    name: str,
    pairs: list[str] = typer.Argument(..., metavar="KEY=VALUE...",
                                      help="Settings to change, e.g. target_precision=0.98 calibration_method=auto"),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Change project settings (checked: an unknown key or a bad value changes nothing)."""
    from labelloop.services.projects import get_row, update_settings

    changes = parse_pairs(pairs, option="")
    workspace = open_workspace(data_dir)
    with workspace.session() as session:
        settings = update_settings(session, get_row(session, name), changes)
    if "sampling" in changes:  # the new strategy ranks the open items now (services/assist/sampling.py)
        from labelloop.services.assist.sampling import refresh_after_model

        refresh_after_model(workspace, name)
    if as_json:
        print_json(settings)
    else:
        out.print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in settings.items()), highlight=False)


@app.command("import")
def import_command(
    name: str,
    path: str = typer.Argument(..., help="A file or folder, or an object-store prefix such as s3://bucket/prefix."),
    format: str = typer.Option("auto", "--format", help="auto, images, coco, yolo, voc, masks, instances, scribbles, folders, csv, dicom"),
    split: Optional[str] = typer.Option(None, "--split", help="Put every item in this split: train, val or test."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Import the readable files and list the others."),
    by_reference: bool = typer.Option(False, "--by-reference", help="Register the objects under an s3:// prefix "
                                      "where they lie, without copying them into the blob store."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Import images (and their annotations) into a project: all or nothing unless --skip-bad."""
    from labelloop.services.projects import get_project

    workspace = open_workspace(data_dir)
    with workspace.session() as session:
        project = get_project(session, name)
    from labelloop.errors import InvalidInput
    from labelloop.services.data.object_import import is_object_url

    if by_reference and not is_object_url(path):
        raise InvalidInput(f"--by-reference registers objects of an object store (s3://bucket/prefix); {path} is a "
                           f"local path: import it without --by-reference")
    where = path if is_object_url(path) else str(Path(path).resolve())
    params = {"project": name, "path": where, "format": format, "split": split, "skip_bad": skip_bad,
              **({"by_reference": True} if by_reference else {})}
    job = run_job_here(workspace, "import", params, project.id, quiet=as_json)
    report = job.result
    if as_json:
        print_json({"job": job.id, **report})
        return
    out.print(
        f"imported {report['items_added']} items ({report['items_existing']} already there) and "
        f"{report['annotations_added']} annotations from {report['files']} files as {report['format']} (job {job.id})"
    )
    if report.get("predictions_added"):
        out.print(f"and {report['predictions_added']} predictions with their scores (they wait in review)")
    if report["classes_added"]:
        out.print(f"classes taken from the files: {', '.join(report['classes_added'])}")
    for line in report["skipped"]:
        err.print(f"skipped {line}", highlight=False)
    for line in report["warnings"]:
        err.print(f"warning: {line}", highlight=False)


@app.command("export")
def export_command(
    name: str,
    out_dir: Path = typer.Argument(..., metavar="OUT"),
    format: str = typer.Option(..., "--format", help="coco, yolo, voc, masks, instances, scribbles, folders, csv"),
    include: str = typer.Option("annotations", "--include", help="annotations, predictions or both"),
    images: bool = typer.Option(True, "--images/--no-images", help="Write the image files beside the labels."),
    include_unlabelled: bool = typer.Option(
        False, "--include-unlabelled",
        help="Also export items nobody labelled (with empty labels); by default only labelled items are written."),
    scores: bool = typer.Option(False, "--scores", help="yolo: a confidence column after each predicted shape."),
    exclude_duplicates: bool = typer.Option(
        False, "--exclude-duplicates",
        help="Keep one item per duplicate group found by `labelloop quality NAME --kind duplicate`."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Export a project's labelled items (and images) in a standard format, streamed."""
    from labelloop.services.projects import get_project

    workspace = open_workspace(data_dir)
    with workspace.session() as session:
        project = get_project(session, name)
    params = {"project": name, "out": str(out_dir.resolve()), "format": format, "include": include, "images": images,
              "unlabelled": include_unlabelled, "scores": scores, "exclude_duplicates": exclude_duplicates}
    job = run_job_here(workspace, "export", params, project.id, quiet=as_json)
    if as_json:
        print_json({"job": job.id, **job.result})
        return
    result = job.result
    out.print(f"exported {result['items']} items and {result['shapes']} shapes as {format} to {result['out']}")
    for line in result.get("warnings", []):
        err.print(f"warning: {line}", highlight=False)


@app.command()
def stats(name: str, data_dir: Optional[Path] = DataDir, as_json: bool = JsonFlag) -> None:
    """Counts: items per split, annotated items, shapes per class, annotators, predictions."""
    from labelloop.services.data.stats import project_stats

    data = project_stats(open_workspace(data_dir), name)
    if as_json:
        print_json(data)
        return
    out.print(f"[bold]{data['project']}[/bold] ({data['kind']}): {data['items']} items, "
              f"{data['annotated_items']} annotated, {data['unlabelled_items']} unlabelled")
    out.print("splits: " + ", ".join(f"{k} {v}" for k, v in data["items_per_split"].items()))
    table = Table("class", "items", "shapes")
    for label, count in data["shapes_per_class"].items():
        table.add_row(label, str(data["items_per_class"].get(label, 0)), str(count))
    out.print(table)
    if data["items_per_annotator"]:
        out.print("annotators: " + ", ".join(f"{k} {v}" for k, v in data["items_per_annotator"].items()))
    if data["predictions"]:
        out.print("predictions: " + ", ".join(f"{k} {v}" for k, v in data["predictions"].items()))


@jobs_app.command("list")
def jobs_list(
    state: Optional[str] = typer.Option(None, "--state", help="queued, running, done, failed or cancelled"),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Recent jobs, newest first."""
    from labelloop.services.jobs import list_jobs

    jobs = list_jobs(open_workspace(data_dir), state=state)
    if as_json:
        print_json([j.to_dict() for j in jobs])
        return
    table = Table("id", "kind", "state", "progress", "message", "created")
    for j in jobs:
        progress = f"{j.done}/{j.total}" if j.total else str(j.done or "")
        table.add_row(str(j.id), j.kind, j.state, progress, j.message[:60], j.created_at.strftime("%Y-%m-%d %H:%M:%S"))
    out.print(table if jobs else "no jobs")


@jobs_app.command("show")
def jobs_show(job_id: int, data_dir: Optional[Path] = DataDir, as_json: bool = JsonFlag) -> None:
    """One job with its log."""
    from labelloop.services.jobs import get_job, job_log

    workspace = open_workspace(data_dir)
    job = get_job(workspace, job_id)
    if as_json:
        print_json({**job.to_dict(), "log": job_log(workspace, job_id)})
        return
    out.print(f"job {job.id} ({job.kind}): {job.state} {job.message}")
    if job.error:
        out.print(job.error, highlight=False)
    out.print(job_log(workspace, job_id), highlight=False)


@jobs_app.command("cancel")
def jobs_cancel(job_id: int, data_dir: Optional[Path] = DataDir, as_json: bool = JsonFlag) -> None:
    """Cancel a job: a queued job at once, a running one at its next progress report."""
    from labelloop.services.jobs import cancel_job

    job = cancel_job(open_workspace(data_dir), job_id)
    if as_json:
        print_json(job.to_dict())
    else:
        out.print(f"job {job.id}: {'cancelled' if job.state == 'cancelled' else 'cancel requested'}")


@app.command()
def demo(data_dir: Optional[Path] = DataDir) -> None:
    """The main job on the bundled sample: import nuclei with instance masks, export COCO, show stats."""
    from labelloop.cli.demo import run_demo

    run_demo(data_dir, out, err)


from labelloop.cli.modelling import register as _register_model_commands  # noqa: E402

_register_model_commands(app)
from labelloop.cli.classify import register as _register_classify_commands  # noqa: E402

_register_classify_commands(app)
from labelloop.cli.server import register as _register_server_commands  # noqa: E402

_register_server_commands(app)
from labelloop.cli.quality import register as _register_quality  # noqa: E402

_register_quality(app)
from labelloop.cli.serve_ml import register as _register_serve_ml  # noqa: E402

_register_serve_ml(app)
from labelloop.cli.simulate import register as _register_simulate  # noqa: E402

_register_simulate(app)


def _hoist_data_dir(argv: list[str]) -> list[str]:
    """--data-dir works anywhere on the line: pull it out and hand it over through the environment."""
    result, index = [], 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--data-dir" and index + 1 < len(argv):
            os.environ["LABELLOOP_DATA_DIR"] = argv[index + 1]
            index += 2
            continue
        if arg.startswith("--data-dir="):
            os.environ["LABELLOOP_DATA_DIR"] = arg.split("=", 1)[1]
            index += 1
            continue
        result.append(arg)
        index += 1
    return result


def main(argv: list[str] | None = None) -> None:
    try:  # typer >= 0.24 carries its own copy of click (and no longer installs click); older typer uses click
        from typer._click.exceptions import ClickException
    except ImportError:
        from click import ClickException

    from labelloop.errors import Cancelled, LabelloopError

    args = _hoist_data_dir(list(sys.argv[1:] if argv is None else argv))
    try:
        app(args=args, prog_name="labelloop", standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except Cancelled as exc:
        err.print(f"cancelled: {exc}", highlight=False)
        sys.exit(130)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except LabelloopError as exc:
        err.print(f"error: {exc}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(1)
    except ImportError as exc:  # a lazily imported extra that is not installed: say which one
        from labelloop.extras import missing_extra

        if (missing := missing_extra(exc)) is None:
            raise
        err.print(f"error: {missing}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
