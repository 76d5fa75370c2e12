"""Blobs on S3-compatible storage and imports by reference, against moto's S3 server (a real HTTP server process
on 127.0.0.1, started here), on SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from s3_support import MotoServer, free_port
from sqlalchemy import select

from conftest import snapshot

pytest.importorskip("s3fs", reason="the [s3] extra (s3fs) is not installed")

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "labelloop" / "sample" / "nuclei" / "images"


@pytest.fixture(scope="module")
def moto():
    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture
def s3(moto, monkeypatch):
    moto.environment(monkeypatch)
    return moto


def _workspace(tmp_path, database_url, blob_url=None):
    from labelloop.services.workspace import Workspace

    return Workspace.init(tmp_path / "ws", database_url=database_url, blob_url=blob_url)


def _project(workspace, name="cells", kind="classification", classes=("a", "b")):
    from labelloop.services.projects import create_project

    with workspace.session() as session:
        create_project(session, name, kind, list(classes))


def _import(workspace, name, path, **params):
    from labelloop.services.jobs import create_job, get_job, run_job

    with workspace.session() as session:
        from labelloop.services.projects import get_project

        project = get_project(session, name)
    job_id = create_job(workspace, "import", {"project": name, "path": str(path), **params}, project.id)
    run_job(workspace, job_id)
    return get_job(workspace, job_id)


def _upload_sample(s3: MotoServer, bucket: str, prefix: str) -> list[str]:
    client = s3.client()
    names = sorted(p.name for p in SAMPLE.glob("*.png"))
    for name in names:
        client.upload_file(str(SAMPLE / name), bucket, f"{prefix}/{name}")
    return names


def _blob_objects(s3, bucket):
    return [k for k in s3.keys(bucket, "blobs/") if not k.rsplit("/", 1)[-1].startswith(".")]


def test_blob_store_on_s3_import_read_export(s3, tmp_path, database_url):
    from labelloop import media
    from labelloop.services.data.exporting import export_project
    from labelloop.store.tables import BlobRow, ItemRow

    bucket = s3.new_bucket()
    workspace = _workspace(tmp_path, database_url, f"s3://{bucket}/blobs")
    _project(workspace, kind="instance", classes=["nucleus"])
    job = _import(workspace, "cells", SAMPLE.parent, format="instances")
    assert job.state == "done", job.error
    assert job.result["items_added"] == 8 and job.result["annotations_added"] == 8
    keys = _blob_objects(s3, bucket)
    with workspace.session() as session:
        shas = set(session.scalars(select(BlobRow.sha256)))
        assert set(session.scalars(select(BlobRow.url))) == {None}
        item = session.scalars(select(ItemRow)).first()
    assert {k.rsplit("/", 1)[1] for k in keys} == shas and len(keys) == 8
    assert all(k == f"blobs/{k.rsplit('/', 1)[1][:2]}/{k.rsplit('/', 1)[1]}" for k in keys)
    pixels = media.read(workspace.blobs.local_path(item.blob_sha256), name=item.source)
    assert pixels.shape[:2] == (item.height, item.width)
    summary = export_project(workspace, "cells", tmp_path / "out", format="coco")
    exported = {p.name: p.read_bytes() for p in (tmp_path / "out").rglob("*.png")}
    assert summary.items == 8 and exported == {n: (SAMPLE / n).read_bytes() for n in exported} and len(exported) == 8
    workspace.close()


def test_failed_upload_mid_import_writes_nothing(s3, tmp_path, database_url):
    """The 4th upload fails (injected in the client, the server stays up): no rows, and the 3 blobs already
    uploaded are removed from the bucket again."""
    bucket = s3.new_bucket()
    workspace = _workspace(tmp_path, database_url, f"s3://{bucket}/blobs")
    _project(workspace)
    before = snapshot(workspace)
    real_put = workspace.blobs.fs.put_file
    calls = []

    def failing_put(local, remote, *args, **kwargs):
        calls.append(remote)
        if len(calls) == 4:
            raise ConnectionError("Connection reset by peer (injected)")
        return real_put(local, remote, *args, **kwargs)

    workspace.blobs.fs.put_file = failing_put
    job = _import(workspace, "cells", SAMPLE, format="images")
    assert job.state == "failed" and "cannot reach the storage" in job.error and "LABELLOOP_S3_ENDPOINT_URL" in job.error
    assert len(calls) == 4
    assert _blob_objects(s3, bucket) == []
    assert snapshot(workspace) == before
    workspace.blobs.fs.put_file = real_put
    job = _import(workspace, "cells", SAMPLE, format="images")  # the same import, once the storage works
    assert job.state == "done" and job.result["items_added"] == 8
    assert len(_blob_objects(s3, bucket)) == 8
    workspace.close()


def test_import_by_reference_copies_nothing(s3, tmp_path, database_url, capsys):
    from labelloop import media
    from labelloop.cli.main import main
    from labelloop.store.blobs import StorageError
    from labelloop.store.tables import BlobRow, ItemRow

    bucket = s3.new_bucket()
    names = _upload_sample(s3, bucket, "raw/set1")
    workspace = _workspace(tmp_path, database_url)  # local blob store: references must not land in it
    _project(workspace)
    data = str(workspace.root)
    main(["import", "cells", f"s3://{bucket}/raw", "--by-reference", "--json", "--data-dir", data])
    out = capsys.readouterr().out
    assert '"items_added": 8' in out
    assert sorted(workspace.blobs) == [], "by reference, nothing is copied into the blob store"
    with workspace.session() as session:
        rows = {r.sha256: r.url for r in session.scalars(select(BlobRow))}
        items = list(session.scalars(select(ItemRow).order_by(ItemRow.source)))
    assert sorted(rows.values()) == [f"s3://{bucket}/raw/set1/{n}" for n in names]
    assert [i.source for i in items] == [f"set1/{n}" for n in names]
    first = items[0]
    pixels = media.read(workspace.blobs.local_path(first.blob_sha256), name=first.source)
    reference = media.read(SAMPLE / names[0])
    assert (pixels == reference).all()

    job = _import(workspace, "cells", f"s3://{bucket}/raw", by_reference=True)  # again: nothing new
    assert job.state == "done" and job.result["items_added"] == 0 and job.result["items_existing"] == 8

    # an object changed after the import is reported, not read as something else
    s3.client().put_object(Bucket=bucket, Key=f"raw/set1/{names[1]}", Body=(SAMPLE / names[0]).read_bytes())
    with pytest.raises(StorageError, match="changed after it was imported by reference"):
        workspace.blobs.local_path(items[1].blob_sha256)
    workspace.close()


def test_import_from_s3_by_copy_stores_blobs(s3, tmp_path, database_url):
    from labelloop.store.tables import BlobRow

    bucket = s3.new_bucket()
    _upload_sample(s3, bucket, "raw")
    workspace = _workspace(tmp_path, database_url)
    _project(workspace)
    job = _import(workspace, "cells", f"s3://{bucket}/raw")
    assert job.state == "done" and job.result["items_added"] == 8
    with workspace.session() as session:
        assert set(session.scalars(select(BlobRow.url))) == {None}
    assert len(sorted(workspace.blobs)) == 8
    workspace.close()


def test_a_bad_object_fails_the_whole_import_unless_skipped(s3, tmp_path, database_url):
    bucket = s3.new_bucket()
    _upload_sample(s3, bucket, "raw")
    s3.client().put_object(Bucket=bucket, Key="raw/broken.png", Body=b"\x89PNG\r\n\x1a\n not really a png")
    workspace = _workspace(tmp_path, database_url)
    _project(workspace)
    before = snapshot(workspace)
    for by_reference in (True, False):
        job = _import(workspace, "cells", f"s3://{bucket}/raw", by_reference=by_reference)
        assert job.state == "failed" and "1 of 9 objects cannot be imported" in job.error and "broken.png" in job.error
        assert snapshot(workspace) == before
    job = _import(workspace, "cells", f"s3://{bucket}/raw", by_reference=True, skip_bad=True)
    assert job.state == "done" and job.result["items_added"] == 8 and len(job.result["skipped"]) == 1
    workspace.close()


def test_missing_bucket_is_named_and_nothing_is_written(s3, tmp_path, capsys):
    from labelloop.cli.main import main
    from labelloop.store.blobs import StorageError

    with pytest.raises(StorageError, match=r"the bucket 'no-such-bucket-here' does not exist .*create it"):
        _workspace(tmp_path, None, "s3://no-such-bucket-here/blobs")
    assert not (tmp_path / "ws").exists()

    workspace = _workspace(tmp_path, None)
    _project(workspace)
    before = snapshot(workspace)
    with pytest.raises(SystemExit) as ended:
        main(["import", "cells", "s3://no-such-bucket-here/raw", "--by-reference", "--data-dir", str(workspace.root)])
    assert ended.value.code == 1
    err = capsys.readouterr().err
    assert "the bucket 'no-such-bucket-here' does not exist" in err and "Traceback" not in err
    assert snapshot(workspace) == before

    with pytest.raises(SystemExit):
        main(["import", "cells", str(SAMPLE), "--by-reference", "--data-dir", str(workspace.root)])
    assert "is a local path" in capsys.readouterr().err
    assert snapshot(workspace) == before
    workspace.close()


def test_wrong_credentials_are_named(tmp_path, monkeypatch):
    from labelloop.store.blobs import StorageError

    server = MotoServer(auth=True).start()
    try:
        server.environment(monkeypatch)
        bucket = server.new_bucket()
        _upload_sample(server, bucket, "raw")
        workspace = _workspace(tmp_path, None, f"s3://{bucket}/blobs")  # the right key works
        _project(workspace)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        with pytest.raises(StorageError, match="refused.*AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
            _workspace(tmp_path / "other", None, f"s3://{bucket}/blobs")
        assert not (tmp_path / "other" / "ws").exists()
        before = snapshot(workspace)
        job = _import(workspace, "cells", f"s3://{bucket}/raw", by_reference=True)
        assert job.state == "failed" and "AWS_SECRET_ACCESS_KEY" in job.error, job.error
        assert snapshot(workspace) == before
        workspace.close()
    finally:
        server.stop()


def test_unreachable_endpoint_is_named_quickly(tmp_path, monkeypatch):
    from labelloop.store.blobs import StorageError

    port = free_port()  # nothing listens there
    monkeypatch.setenv("LABELLOOP_S3_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    started = time.monotonic()
    with pytest.raises(StorageError, match=r"cannot reach the storage .*LABELLOOP_S3_ENDPOINT_URL"):
        _workspace(tmp_path, None, "s3://some-bucket/blobs")
    assert time.monotonic() - started < 60
    assert not (tmp_path / "ws").exists()


def test_the_blob_store_lists_and_deletes_on_s3(s3, tmp_path):
    from labelloop.store.blobs import BlobStore

    bucket = s3.new_bucket()
    store = BlobStore(f"s3://{bucket}/b", cache_dir=tmp_path / "cache")
    sha, created = store.put_bytes(b"hello")
    assert created and store.put_bytes(b"hello") == (sha, False)
    assert list(store) == [sha] and store.exists(sha)
    with store.open(sha) as handle:
        assert handle.read() == b"hello"
    assert store.local_path(sha).read_bytes() == b"hello"
    store.delete(sha)
    assert list(store) == [] and not store.exists(sha)
    shutil.rmtree(tmp_path / "cache")
