"""Datasets in a bucket, on a real S3-compatible server (SeaweedFS on 127.0.0.1): ingest to a
uri (manifest last, a killed upload finished by the rerun), reading through a verified
node-local copy, training from it, and every bad location as one line."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from pipeline.errors import PipelineError
from tests.conftest import require_shared
from tests.s3_server import BUCKET, S3Server
from tests.sample_data import SHARED
from tests.shard_checks import assert_one_line_error

ANIME = SHARED / "anime-mlds2018" / "extra_data"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with S3Server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture
def uri(request) -> str:
    """Where this test's dataset goes: its own prefix of the shared bucket."""
    return f"s3://{BUCKET}/{request.node.name[:48]}/anime-32"


@pytest.fixture
def bucket_env(s3, monkeypatch, tmp_path):
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # a location mistaken for a path would land here
    return s3


SMALL = ["--set", "model.width_g=16", "--set", "model.width_d=16", "--set", "model.z_dim=32"]


@pytest.fixture
def fresh_ray():
    """No Ray left from an earlier test (its workers would lack this server's variables);
    none left after this one either (the next test starts its own)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    yield
    ray.shutdown()


def ingest_anime(out: str, **options):
    from pipeline.data.ingest import IngestOptions, ingest
    from pipeline.data.sources.images import ImageFolderSource

    return ingest(
        ImageFolderSource(ANIME, ANIME / "tags.csv", size=32),
        IngestOptions(out=out, size=32, workers=1, shard_rows=200, **options),
    )


def objects(uri: str) -> dict[str, bytes]:
    from pipeline import storage

    r = storage.remote(uri)
    found = {}
    for relative, _ in storage.listing(r, r.path):
        with r.fs.open_input_stream(r.at(relative)) as stream:
            found[relative] = stream.read()
    return found


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.shared
def test_ingest_to_a_bucket_matches_a_local_ingest_and_reruns_as_up_to_date(
    bucket_env, uri, tmp_path
):
    require_shared("anime-mlds2018", "extra_data")
    local = ingest_anime(str(tmp_path / "local" / "anime-32"))
    result = ingest_anime(uri)
    assert result.path == uri and not result.up_to_date
    stored = objects(uri)
    manifest = json.loads(stored.pop("manifest.json"))
    assert manifest["name"] == "anime-32" and ".ingest.json" not in stored
    shards = {s["file"]: s["sha256"] for s in manifest["splits"]["train"]["shards"]}
    assert {name: sha(data) for name, data in stored.items()} == shards
    local_files = {s["file"]: s["sha256"] for s in local.manifest["splits"]["train"]["shards"]}
    assert shards == local_files  # the same bytes as a local ingest
    assert not (tmp_path / "cache" / "ingest").exists() or not any(
        (tmp_path / "cache" / "ingest").iterdir()
    )  # the working copy is gone
    assert not list(tmp_path.glob("s3*"))  # nothing written to a folder named like the uri
    assert ingest_anime(uri).up_to_date


@pytest.mark.shared
def test_an_unfinished_upload_is_not_a_dataset_and_the_rerun_finishes_it(bucket_env, uri):
    from pipeline import storage
    from pipeline.data.shards import read_manifest

    require_shared("anime-mlds2018", "extra_data")
    first = ingest_anime(uri)
    # As if killed during the upload: the marker there, the manifest and a shard not yet.
    r = storage.remote(uri)
    storage.write_json(r, r.at(".ingest.json"), {"ingest_key": first.manifest["ingest_key"]})
    storage.delete(r, r.at("manifest.json"))
    last = first.manifest["splits"]["train"]["shards"][-1]["file"]
    storage.delete(r, r.at(last))
    with pytest.raises(PipelineError, match="does not exist or is not finished"):
        read_manifest(uri)
    again = ingest_anime(uri)
    assert not again.up_to_date
    stored = objects(uri)
    assert json.loads(stored["manifest.json"])["fingerprint"] == first.manifest["fingerprint"]
    assert sha(stored[last]) == first.manifest["splits"]["train"]["shards"][-1]["sha256"]
    assert ".ingest.json" not in stored


@pytest.mark.shared
def test_reading_stages_one_verified_copy_per_node(bucket_env, uri, tmp_path, monkeypatch):
    from pipeline import storage
    from pipeline.data.reader import ShardDataset

    require_shared("anime-mlds2018", "extra_data")
    result = ingest_anime(uri)
    data = ShardDataset(uri)
    assert len(data) == result.manifest["splits"]["train"]["rows"]
    assert data.root.is_relative_to(tmp_path / "cache")  # memory-mapped from the local copy
    shard = data.root / result.manifest["splits"]["train"]["shards"][0]["file"]
    staged_at = shard.stat().st_mtime_ns
    assert len(ShardDataset(uri)) == len(data) and shard.stat().st_mtime_ns == staged_at

    # A shard replaced in the bucket is refused on the next node (a fresh cache).
    r = storage.remote(uri)
    with r.fs.open_output_stream(r.at(shard.relative_to(data.root).as_posix())) as out:
        out.write(b"not the shard the manifest lists")
    other_node = tmp_path / "other-node"
    monkeypatch.setenv("PIPELINE_CACHE", str(other_node))
    with pytest.raises(PipelineError, match="does not match its sha256"):
        ShardDataset(uri)
    leftovers = [p for p in other_node.rglob("*") if p.is_file() and ".tmp-" in p.name]
    assert not leftovers


@pytest.mark.shared
def test_fid_statistics_computed_on_one_node_are_put_beside_the_dataset(
    bucket_env, uri, tmp_path, monkeypatch
):
    """One node computes the reference statistics of its staged copy and puts them beside the
    dataset in the bucket; another node, which staged the dataset before they existed, takes
    them from there instead of computing them again."""
    from pipeline import storage
    from pipeline.data.staging import local_copy
    from pipeline.metrics.config import FidConfig
    from pipeline.metrics.fid import ensure_reference
    from pipeline.metrics.weights import backbone_for

    require_shared("anime-mlds2018", "extra_data")
    ingest_anime(uri)
    fid, backbone = FidConfig(samples=96, dims=64, batch=32), backbone_for("standin")
    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path / "node-b"))
    node_b = local_copy(uri)  # staged while the bucket has no statistics
    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path / "node-a"))
    said_a: list[str] = []
    stats_a = ensure_reference(backbone, local_copy(uri), "train", fid, say=said_a.append)
    assert any("computed" in line for line in said_a), said_a
    r = storage.remote(uri)
    relative = stats_a.relative_to(stats_a.parents[1]).as_posix()  # stats/fid-....npz
    assert storage.exists(r, r.at(relative))

    said_b: list[str] = []
    stats_b = ensure_reference(backbone, node_b, "train", fid, say=said_b.append)
    assert said_b == []  # fetched from beside the dataset, not computed
    assert stats_b.read_bytes() == stats_a.read_bytes()
    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path / "node-c"))  # a node staging it now
    assert (local_copy(uri) / relative).read_bytes() == stats_a.read_bytes()


@pytest.mark.shared
def test_training_reads_a_dataset_in_a_bucket(bucket_env, uri, tmp_path):
    from pipeline.training.config import load_train_config
    from pipeline.training.runner import LocalContext, run_worker
    from tests.train_fixtures import TINY

    require_shared("anime-mlds2018", "extra_data")
    ingest_anime(uri)
    config = load_train_config(
        "acgan", options={"data.dataset": uri, "workers": 1, "epochs": 1, **TINY}
    )
    last = run_worker(config, LocalContext(tmp_path / "run"), uri)
    assert last["epoch"] == 1 and last["step"] == 566 // 32


@pytest.mark.shared
def test_bad_locations_are_one_line_and_write_nothing(cli, bucket_env, uri, tmp_path, monkeypatch):
    require_shared("anime-mlds2018", "extra_data")
    ingest = ["ingest", "images", "--root", ANIME, "--size", "32", "--workers", "1"]

    result = cli(*ingest, "--out", "s3://no-such-bucket/data/anime-32")
    assert_one_line_error(result, "bucket 'no-such-bucket'", "does not exist", "create it")
    result = cli(*ingest, "--out", "zz://bucket/anime")
    assert_one_line_error(result, "zz://bucket/anime", "s3://bucket/prefix")
    result = cli("train", "dcgan", "--data", f"s3://{BUCKET}/data/never-ingested")
    assert_one_line_error(result, "never-ingested", "does not exist or is not finished")

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    result = cli(*ingest, "--out", uri)
    assert_one_line_error(result, uri, "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    result = cli("train", "dcgan", "--data", uri)
    assert_one_line_error(result, uri, "is the storage server at http://127.0.0.1:9 up")
    assert not list(tmp_path.glob("s3*")) and not list(tmp_path.glob("zz*"))
    assert not (tmp_path / "cache" / "ingest").exists() or not any(
        (tmp_path / "cache" / "ingest").rglob("*.arrow")
    )


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.shared
def test_train_with_data_and_runs_in_the_bucket(
    cli, bucket_env, uri, tmp_path, monkeypatch, fresh_ray
):
    """`pipeline train` on a local Ray, 2 DDP workers, reading the dataset from the bucket and
    keeping its Ray run (checkpoints) there: nothing lands in a local runs folder."""
    from mlflow import MlflowClient

    from pipeline import storage

    require_shared("anime-mlds2018", "extra_data")
    ingest_anime(uri)
    runs = f"s3://{BUCKET}/runs-{uri.split('/')[3][-12:]}"
    monkeypatch.setenv("PIPELINE_RUNS", runs)
    result = cli(
        "train", "dcgan", "--data", uri, "--epochs", "1", "--workers", "2", "--batch-size", "32",
        *SMALL,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED"
    r = storage.remote(runs)
    stored = [path for path, _ in storage.listing(r, r.at(run.info.run_name))]
    assert any(p.startswith("checkpoint-") and p.endswith("checkpoint.pt") for p in stored)
    assert not (tmp_path / "runs").exists()  # the conftest's local PIPELINE_RUNS stays unused


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.shared
def test_a_pbt_sweep_keeps_its_state_in_the_bucket(
    cli, bucket_env, uri, tmp_path, monkeypatch, fresh_ray
):
    """A 2-trial synchronous PBT sweep with data, Tune state and Train checkpoints in the
    bucket: the exploiting trial starts from the donor's checkpoint there, and the best
    generator is exported from it."""
    import yaml
    from mlflow import MlflowClient

    from pipeline import storage

    require_shared("anime-mlds2018", "extra_data")
    ingest_anime(uri)
    runs = f"s3://{BUCKET}/runs-pbt"
    monkeypatch.setenv("PIPELINE_RUNS", runs)
    space = tmp_path / "pbt.yaml"
    space.write_text(
        yaml.safe_dump(
            {
                "metric": "loss_d",
                "pbt": {"perturbation_interval": 1, "quantile_fraction": 0.5, "synch": True,
                        "mutate": ["optim.lr_g"]},
                "search": {"optim.lr_g": {"loguniform": [1e-4, 1e-3]}},
            }
        )
    )  # fmt: skip
    exported = tmp_path / "best"
    result = cli(
        "tune", "acgan", "--data", uri, "--space", space, "--scheduler", "pbt", "--samples", "2",
        "--max-epochs", "2", "--workers-per-trial", "1", "--name", "pbt", "--export-best",
        exported, *SMALL,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "PBT took over trial" in result.stdout
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    runs_found = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs_found) == 3 and all(r.info.status == "FINISHED" for r in runs_found)
    r = storage.remote(runs)
    stored = [path for path, _ in storage.listing(r, r.at("sweeps", "pbt"))]
    assert "sweep.json" in stored
    assert any(p.startswith("train/") and p.endswith("checkpoint.pt") for p in stored)
    assert (exported / "generator.pt").is_file()
    assert not (tmp_path / "runs").exists()

    # `--resume` restores the sweep from the bucket (sweep.json, Tune's state): nothing to rerun.
    result = cli("tune", "--resume", "--name", "pbt")
    assert result.exit_code == 0, result.output
    again = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(again) == 3 and all(r.info.status == "FINISHED" for r in again)
