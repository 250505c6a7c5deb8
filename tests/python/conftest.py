"""A running AEX for the SDK tests: a fresh database, the mock provider and `aex serve`, all on
loopback, started from the built binary and torn down afterwards."""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AEX = os.environ.get("AEX_BIN", str(ROOT / "target" / "debug" / "aex"))
ADMIN_DB_URL = os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def psql(sql: str) -> None:
    subprocess.run(["psql", ADMIN_DB_URL, "-v", "ON_ERROR_STOP=1", "-qc", sql], check=True)


def wait_ready(url: str, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"aex exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("aex did not become ready")


class Aex:
    def __init__(self, home: Path, env: dict, base: str):
        self.home, self.env, self.base = home, env, base

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run([AEX, *args], env=self.env, capture_output=True, text=True)
        if check and out.returncode != 0:
            raise AssertionError(f"aex {' '.join(args)} failed: {out.stderr}")
        return out

    def create_agent(self, name: str, budget: str = "5.00", *flags: str) -> str:
        out = self.cli("agent", "create", name, budget, "600", *flags, "--json")
        return json.loads(out.stdout)["token"]

    def agent(self, name: str) -> dict:
        return json.loads(self.cli("agent", "show", name, "--json").stdout)


@pytest.fixture(scope="session")
def aex():
    db = "aex_pytest_" + uuid.uuid4().hex
    psql(f"CREATE DATABASE {db}")
    home = Path(tempfile.mkdtemp(prefix="aex-sdk-"))
    procs = []
    try:
        mock = subprocess.Popen(
            [AEX, "dev", "mock-upstream", "--listen", "127.0.0.1:0", "--chunks", "4"],
            stdout=subprocess.PIPE, text=True,
        )
        procs.append(mock)
        mock_addr = mock.stdout.readline().strip()
        port = free_port()
        db_url = ADMIN_DB_URL.rsplit("/", 1)[0] + "/" + db
        (home / "models.toml").write_text(f"""
[providers.mock]
kind = "openai"
base_url = "http://{mock_addr}/v1"
api_key_env = "MOCK_PROVIDER_KEY"

[models."gpt-4o-mini"]
provider = "mock"
upstream_model = "mock-gpt-4o-mini"
input_usd_per_million = "0.15"
output_usd_per_million = "0.60"
max_output_tokens = 1000
capabilities = ["chat", "streaming", "tools", "vision", "responses"]

[models."text-embedding-3-small"]
provider = "mock"
upstream_model = "mock-embedding"
input_usd_per_million = "0.02"
capabilities = ["embeddings"]
""")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AEX_")}
        env.update({"AEX_HOME": str(home), "MOCK_PROVIDER_KEY": "sk-mock"})
        init = subprocess.run(
            [AEX, "init", "--database-url", db_url, "--listen", f"127.0.0.1:{port}", "--json"],
            env=env, capture_output=True, text=True,
        )
        assert init.returncode == 0, init.stderr
        log = open(home / "serve.log", "w")
        server = subprocess.Popen([AEX, "serve"], env=env, stdout=log, stderr=log)
        procs.append(server)
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, server)
        yield Aex(home, env, base)
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        shutil.rmtree(home, ignore_errors=True)
