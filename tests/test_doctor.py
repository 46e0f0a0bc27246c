"""`pipeline doctor`: green on a laptop's defaults, and a failed check (with its reason) for
each thing a run would trip over: an unreachable bucket, a dashboard URL as RAY_ADDRESS, an
MLflow server that does not answer."""

from __future__ import annotations

import pytest

from tests.s3_server import BUCKET, S3Server


def test_a_laptop_is_green_and_nothing_is_created(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    result = cli("doctor")
    assert result.exit_code == 0, result.output
    for word in ("torch", "no RAY_ADDRESS", "PIPELINE_DATA", "PIPELINE_RUNS", "mlflow", "stand-in"):
        assert word in result.stdout, word
    # What the first command makes is only said, not made.
    assert not (tmp_path / "data").exists() and not (tmp_path / "runs").exists()
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow  # an S3 server started and stopped
def test_locations_in_a_bucket_green_then_red_when_the_server_stops(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with S3Server(tmp_path / "s3") as s3:
        for name, value in s3.env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("PIPELINE_DATA", f"s3://{BUCKET}/data")
        monkeypatch.setenv("PIPELINE_RUNS", f"s3://{BUCKET}/runs")
        result = cli("doctor")
        assert result.exit_code == 0, result.output
        assert result.stdout.count("readable and writable") >= 2
        s3.stop()
        result = cli("doctor")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: 2 check(s) failed: PIPELINE_DATA, PIPELINE_RUNS"
    assert "is the storage server" in " ".join(result.stdout.split())


def test_a_dashboard_url_and_a_silent_mlflow_server_fail(cli, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there
    result = cli("doctor")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: 2 check(s) failed: ray, mlflow"
    said = " ".join(result.stdout.split())
    assert "RAY_API_SERVER_ADDRESS" in said and "not reachable" in said
