"""Secrets on the machine (issue 22, finding 7): no password of the team stack in any process's
command line (`ps` shows every user's), nor in a file others can read, not even after a failed
start; compose.yaml refuses placeholder passwords and publishes the UI on 127.0.0.1;
`infra/local/two-node.sh` keeps its state in a folder of the user's own and kills only its
own processes, whatever its pid files say."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from tests.browser import free_port
from tests.test_team_stack import running_stack

REPO = Path(__file__).resolve().parents[1]
STACK = REPO / "mlflow" / "local-stack.sh"
TWO_NODE = REPO / "infra" / "local" / "two-node.sh"
COMPOSE = REPO / "mlflow" / "compose.yaml"
SECRET_NAMES = ("PG_PASSWORD", "S3_SECRET_KEY", "ADMIN_PASSWORD", "FLASK_SECRET_KEY")


def stack_secrets(stack: Path) -> dict[str, str]:
    """The passwords and keys local-stack.sh made (its secrets.env)."""
    pairs = dict(re.findall(r"^(\w+)=(\S+)$", (stack / "secrets.env").read_text(), re.M))
    secrets = {name: pairs[name] for name in SECRET_NAMES if name in pairs}
    assert len(secrets[SECRET_NAMES[0]]) >= 16, secrets
    return secrets


def command_lines_holding(secrets: dict[str, str]) -> list[str]:
    """Every running process whose command line (what `ps -eo args` shows) holds a secret."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().decode(errors="replace").replace("\0", " ")
        except OSError:  # gone meanwhile
            continue
        found += [f"{name} in pid {cmdline.parent.name}: {args[:300]}"
                  for name, value in secrets.items() if value in args]  # fmt: skip
    return found


def readable_files_holding(folder: Path, secrets: dict[str, str]) -> list[str]:
    """Files under `folder` that hold a secret and that group or others may read."""
    found = []
    for path in folder.rglob("*"):
        mode = path.lstat().st_mode
        if not stat.S_ISREG(mode) or not mode & 0o044:
            continue
        data = path.read_bytes()
        found += [f"{path.relative_to(folder)} (mode {stat.filemode(mode)}) holds {name}"
                  for name, value in secrets.items() if value.encode() in data]  # fmt: skip
    return found


def require_postgres() -> None:
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        pytest.skip("needs PostgreSQL (apt install postgresql)")


# -- mlflow/local-stack.sh ----------------------------------------------------------------------


@pytest.mark.slow
def test_no_secret_of_the_running_stack_in_ps_or_in_a_file_others_can_read():
    with running_stack(auth=True) as (_, stack):
        secrets = stack_secrets(stack)
        assert not command_lines_holding(secrets)
        assert not readable_files_holding(stack, secrets)
        for name in ("secrets.env", "env.sh", "pgpass", "basic_auth.ini", "s3/s3.json"):
            assert stat.S_IMODE((stack / name).stat().st_mode) == 0o600, name
        # The server did get its store from the environment: its tables are in PostgreSQL
        # (reached through the stack's pgpass file, as a backup with pg_dump would).
        port = (stack / "pgpass").read_text().split(":")[1]
        psql = next(Path("/usr/lib/postgresql").glob("*/bin/psql"))
        done = subprocess.run(
            [str(psql), "-h", "127.0.0.1", "-p", port, "-U", "mlflow", "-d", "mlflow", "-tAc",
             "SELECT count(*) FROM information_schema.tables WHERE table_name = 'experiments'"],
            env={**os.environ, "PGPASSFILE": str(stack / "pgpass")}, capture_output=True,
            text=True, timeout=30,
        )  # fmt: skip
        assert done.stdout.strip() == "1", done.stderr


def test_a_failed_initdb_leaves_no_password_file_others_can_read():
    require_postgres()
    state = Path(tempfile.mkdtemp(prefix="stack-", dir="/tmp"))  # short: PostgreSQL's socket
    try:
        os.chmod(state, 0o755)  # the postgres user reaches its folder inside
        stack = state / "stack"
        (stack / "postgres").mkdir(parents=True)
        (stack / "postgres" / "in-the-way").write_text("initdb refuses a folder not empty\n")
        ports = ("MLFLOW_PORT", "PG_PORT", "S3_PORT")
        env = {**os.environ, "STACK_DIR": str(stack), "PYTHON": sys.executable}
        env |= {name: str(free_port()) for name in ports}
        done = subprocess.run(
            [str(STACK), "up", "--detach"], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 1 and "initdb failed" in done.stderr, done.stderr[-2000:]
        assert not (stack / "pids").exists()  # nothing was left running
        assert not (stack / "pgpass.tmp").exists()
        assert not readable_files_holding(stack, stack_secrets(stack))
    finally:
        shutil.rmtree(state, ignore_errors=True)


def test_the_scripts_parse_and_pass_no_password_as_an_argument():
    for script in (STACK, TWO_NODE):
        done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    code = "\n".join(line for line in STACK.read_text().splitlines()
                     if not line.lstrip().startswith("#"))  # fmt: skip
    assert "--backend-store-uri" not in code  # MLFLOW_BACKEND_STORE_URI instead
    assert "PGPASSWORD" not in code and "umask 022" not in code


# -- mlflow/compose.yaml ------------------------------------------------------------------------


def with_defaults(value: str) -> str:
    """A compose value as compose interpolates it with no .env: `${VAR:-default}` is default."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def compose_services() -> dict[str, dict]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_compose_publishes_the_ui_on_loopback_only():
    published = {name: [with_defaults(str(port)) for port in service.get("ports", [])]
                 for name, service in compose_services().items()}  # fmt: skip
    assert published.pop("mlflow") == ["127.0.0.1:5000:5000"]
    assert not any(published.values()), published  # nothing else reachable from outside


def test_compose_passes_no_password_on_a_command_line():
    for name, service in compose_services().items():
        for field in ("command", "entrypoint"):
            text = str(service.get(field, ""))
            for secret in ("POSTGRES_PASSWORD", "AWS_SECRET_ACCESS_KEY", "MLFLOW_ADMIN_PASSWORD",
                           "MLFLOW_FLASK_SERVER_SECRET_KEY"):  # fmt: skip
                # Only as $$VAR, read by the container's shell from its environment.
                assert "${" + secret not in text, f"{name}.{field} names {secret}"


def depends_on(services: dict[str, dict], name: str) -> set[str]:
    """Every service `name` waits for, directly or through others."""
    direct = set(services[name].get("depends_on", {}))
    return direct.union(*(depends_on(services, d) for d in direct))


def check_secrets(environment: dict[str, str]) -> subprocess.CompletedProcess:
    """compose.yaml's check-secrets step, run here by sh as the container would run it."""
    services = compose_services()
    assert "check-secrets" in services, "compose.yaml has no check-secrets step"
    for name in set(services) - {"check-secrets"}:
        assert "check-secrets" in depends_on(services, name), f"{name} starts without the check"
    shell, flag, script = services["check-secrets"]["entrypoint"]
    assert (shell, flag) == ("/bin/sh", "-c")
    env = {"PATH": os.environ["PATH"], **environment}
    return subprocess.run(
        ["sh", "-c", script.replace("$$", "$")], env=env, capture_output=True, text=True
    )


def env_example() -> dict[str, str]:
    text = (REPO / "mlflow" / ".env.example").read_text()
    return dict(re.findall(r"^(\w+)=(.*)$", text, re.M))


def test_compose_refuses_the_placeholder_passwords():
    example = env_example()
    secrets = ("POSTGRES_PASSWORD", "AWS_SECRET_ACCESS_KEY", "MLFLOW_ADMIN_PASSWORD",
               "MLFLOW_FLASK_SERVER_SECRET_KEY")  # fmt: skip
    assert all(example[name] in ("", "change-me") for name in secrets)  # nothing usable as is
    placeholder = {**example, **dict.fromkeys(secrets, "change-me")}  # an older .env
    done = check_secrets(placeholder)
    assert done.returncode != 0
    for name in secrets:
        assert f"{name} is still the placeholder change-me" in done.stderr, done.stderr
    done = check_secrets({**placeholder, **{name: "x" * 32 for name in secrets},
                          "MLFLOW_ADMIN_PASSWORD": "admin"})  # fmt: skip
    assert done.returncode != 0 and "MLFLOW_ADMIN_PASSWORD is shorter than 16" in done.stderr
    done = check_secrets({**example, **{name: os.urandom(16).hex() for name in secrets}})
    assert done.returncode == 0, done.stderr


# -- infra/local/two-node.sh --------------------------------------------------------------------


def two_node(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    if shutil.which("ray") is None or shutil.which("unshare") is None:
        pytest.skip("needs the ray command and unshare")
    return subprocess.run(
        [str(TWO_NODE), *args], env={**os.environ, **env}, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


@contextmanager
def sleeper(*args: str) -> Iterator[subprocess.Popen]:
    """A process that is no node of a cluster (its own process group, as the nodes have),
    killed by its pid at the end."""
    code = "import time; time.sleep(300)"
    process = subprocess.Popen([sys.executable, "-c", code, *args], start_new_session=True)
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def test_two_node_kills_no_process_a_pid_file_or_a_pattern_names_wrongly():
    state = Path(tempfile.mkdtemp(prefix="rn.", dir="/tmp"))  # a '.' matches any character
    # A path that a pattern built from the state folder's name matches, but that is not in it.
    lookalike = str(state).replace("rn.", "rnX", 1) + "/head"
    try:
        with sleeper() as stranger, sleeper(lookalike) as lookalike_process:
            for name in ("head", "worker"):  # stale pid files: the pid is now someone else's
                (state / f"{name}.pid").write_text(f"{stranger.pid}\n")
            done = two_node("kill-worker", env={"STATE_DIR": str(state)})
            assert done.returncode == 1 and "no worker node running" in done.stderr
            done = two_node("stop", env={"STATE_DIR": str(state)})
            assert done.returncode == 0, done.stderr
            assert stranger.poll() is None, "killed a process a stale pid file named"
            assert lookalike_process.poll() is None, "killed a process by a pattern"
    finally:
        shutil.rmtree(state, ignore_errors=True)


def test_two_node_state_is_a_private_folder_of_the_users_own(tmp_path):
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env = {"XDG_RUNTIME_DIR": str(runtime), "STATE_DIR": ""}
    done = two_node("env", env=env)  # no cluster yet: says where it looked
    assert done.returncode == 1, done.stderr
    assert f"no cluster in {runtime}/pipeline-two-node" in done.stderr, done.stderr
    assert stat.S_IMODE((runtime / "pipeline-two-node").stat().st_mode) == 0o700

    shared = tmp_path / "shared"  # a folder anyone can write: anyone can forge its pid files
    shared.mkdir()
    shared.chmod(0o777)
    with sleeper() as stranger:
        (shared / "head.pid").write_text(f"{stranger.pid}\n")
        done = two_node("stop", env={"STATE_DIR": str(shared)})
        assert done.returncode == 1 and "not a folder of yours that only you can" in done.stderr
        assert stranger.poll() is None
    (runtime / "pipeline-two-node").rmdir()
    (runtime / "pipeline-two-node").symlink_to(shared)  # made beforehand by someone else
    done = two_node("env", env=env)
    assert done.returncode == 1 and "is a symbolic link" in done.stderr, done.stderr
