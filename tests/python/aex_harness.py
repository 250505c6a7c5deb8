"""A running AEX on loopback for end-to-end tests with real clients: a fresh database, the mock
provider (`aex dev mock-upstream`) and `aex serve`, started from the built binary.

Used by the Python tests (conftest.py) and, as a process, by the Node SDK tests:
    python3 tests/python/aex_harness.py
prints one JSON line {"base", "home", "operator_token"} and serves until stdin closes."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AEX = os.environ.get("AEX_BIN", str(ROOT / "target" / "debug" / "aex"))
ADMIN_DB_URL = os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")

MODELS = """
[providers.mock]
kind = "openai"
base_url = "http://{mock}/v1"
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

# The same mock speaks Anthropic's Messages API natively.
[providers.anthropic]
kind = "anthropic"
base_url = "http://{mock}/v1"
api_key_env = "MOCK_PROVIDER_KEY"

[models."claude-sonnet-4-5"]
provider = "anthropic"
upstream_model = "claude-sonnet-4-5"
input_usd_per_million = "3"
output_usd_per_million = "15"
max_output_tokens = 64000
context_window = 200000
capabilities = ["chat", "streaming", "tools", "vision"]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def psql(sql: str) -> None:
    subprocess.run(["psql", ADMIN_DB_URL, "-v", "ON_ERROR_STOP=1", "-qc", sql], check=True)


class AexInstance:
    """Start with `start()`, stop with `stop()` (idempotent; removes everything it made)."""

    def __init__(self, extra_env: dict | None = None, extra_models: str = ""):
        """`extra_env`: more `AEX_*` settings for every server; `extra_models`: more of the
        routing table (TOML, `{mock}` for the mock's address)."""
        self.db = "aex_e2e_" + uuid.uuid4().hex
        self.home = Path(tempfile.mkdtemp(prefix="aex-e2e-"))
        self.procs = []
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AEX_")}
        self.env.update({"AEX_HOME": str(self.home), "MOCK_PROVIDER_KEY": "sk-mock"})
        self.env.update(extra_env or {})
        self.extra_models = extra_models
        self.base = None
        self.operator_token = None

    def start(self) -> "AexInstance":
        psql(f"CREATE DATABASE {self.db}")
        mock = subprocess.Popen([AEX, "dev", "mock-upstream", "--listen", "127.0.0.1:0", "--chunks", "4"],
                                stdout=subprocess.PIPE, text=True)
        self.procs.append(mock)
        mock_addr = mock.stdout.readline().strip()
        (self.home / "models.toml").write_text((MODELS + self.extra_models).replace("{mock}", mock_addr))
        port = free_port()
        db_url = ADMIN_DB_URL.rsplit("/", 1)[0] + "/" + self.db
        init = subprocess.run([AEX, "init", "--database-url", db_url, "--listen", f"127.0.0.1:{port}", "--json"],
                              env=self.env, capture_output=True, text=True)
        if init.returncode != 0:
            raise RuntimeError(init.stderr)
        self.operator_token = json.loads(init.stdout)["operator_token"]
        self.base = self._serve(port, "serve.log")
        return self

    def spawn_replica(self) -> str:
        """Another `aex serve` on the same database and aex.toml, on its own port: its base URL."""
        port = free_port()
        return self._serve(port, f"serve-{port}.log")

    def _serve(self, port: int, log_name: str) -> str:
        log = open(self.home / log_name, "w")
        env = dict(self.env, AEX_LISTEN=f"127.0.0.1:{port}")
        server = subprocess.Popen([AEX, "serve"], env=env, stdout=log, stderr=log)
        self.procs.append(server)
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"aex exited with {server.returncode}: {(self.home / log_name).read_text()}")
            try:
                with urllib.request.urlopen(base + "/ready", timeout=2) as r:
                    if r.status == 200:
                        return base
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("aex did not become ready")
            time.sleep(0.1)

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
        self.procs = []
        if self.db:
            psql(f"DROP DATABASE IF EXISTS {self.db} WITH (FORCE)")
            # `aex init` made the database's runtime role; roles are cluster-wide.
            psql(f"DROP ROLE IF EXISTS {self.db}_runtime")
            self.db = None
        shutil.rmtree(self.home, ignore_errors=True)

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

    def admin_get(self, path: str) -> dict:
        """One GET of the admin API with the operator token: its JSON body."""
        return self.admin("GET", path)

    def admin(self, method: str, path: str, body: dict | None = None) -> dict:
        """One admin API call with the operator token: its JSON body (None when empty)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.operator_token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
            return json.loads(raw) if raw else None


if __name__ == "__main__":
    instance = AexInstance()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        instance.start()
        print(json.dumps({"base": instance.base, "home": str(instance.home), "operator_token": instance.operator_token}), flush=True)
        sys.stdin.read()  # serve until the parent closes our stdin
    finally:
        instance.stop()
