#!/usr/bin/env python3
"""Checks AEX settings and routing tables in the deployment artefacts, for deploy/check.sh.

AEX rejects unknown settings keys at startup, including AEX_* environment variables that name
no setting. This catches such mistakes before a container starts:

    config_keys.py models FILE.toml          a routing table (SPEC section 11)
    config_keys.py manifests RENDERED.yaml   helm template output: ConfigMap aex.toml and
                                             models.toml, AEX_* env names, provider keys
    config_keys.py compose CONFIG.yaml       `docker-compose config` output: AEX_* env of
                                             every service, mounted routing tables

The known keys mirror src/config/settings.rs and src/config/routing.rs; keep them in step.
"""

from __future__ import annotations

import sys
import tomllib
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

INT, BOOL, STR = "int", "bool", "str"

SETTINGS: dict[str, Any] = {
    "listen": STR,
    "database_url": STR,
    "migration_database_url": STR,
    "models_file": STR,
    "auto_migrate": BOOL,
    "log_format": ("pretty", "json"),
    "max_body_bytes": INT,
    "server": {
        "header_read_timeout_seconds": INT,
        "idle_timeout_seconds": INT,
        "body_read_timeout_seconds": INT,
        "max_connections": INT,
        "stream_write_timeout_seconds": INT,
    },
    "db": {"max_connections": INT, "acquire_timeout_seconds": INT},
    "auth": {
        "issuer": STR,
        "active_kid": STR,
        "keys": {"*": STR},
        "revocation_resync_seconds": INT,
    },
    "gateway": {
        "idempotency_wait_seconds": INT,
        "result_retention_hours": INT,
        "default_max_output_tokens": INT,
        "clamp_min_output_tokens": INT,
        "upstream_connect_timeout_seconds": INT,
        "agent_transaction_slots": INT,
    },
    "cluster": {
        "heartbeat_seconds": INT,
        "stale_after_seconds": INT,
        "reconcile_interval_seconds": INT,
        "drain_timeout_seconds": INT,
        "drain_grace_seconds": INT,
    },
    "ledger": {
        "checkpoint_interval_seconds": INT,
        "verify_on_startup": BOOL,
        "refuse_start_on_failure": BOOL,
        "verify_interval_seconds": INT,
        "full_verify_interval_seconds": INT,
    },
    "metrics": {
        "agent_labels": BOOL,
        "listen": STR,
        "sample_interval_seconds": INT,
        "stale_reservation_seconds": INT,
    },
    "cli": {"url": STR, "admin_token": STR},
    "tools": {
        "require_isolation": BOOL,
        "bwrap_path": STR,
        "memory_limit_mib": INT,
        "plugin_dir": STR,
        "max_executable_bytes": INT,
        "allowed_http_hosts": [STR],
    },
}
# AEX_* variables that are read but are not settings keys.
NON_SETTING_ENV = {"AEX_HOME", "AEX_CONFIG", "AEX_URL", "AEX_ADMIN_TOKEN"}

PROVIDER = {"kind": ("openai",), "base_url": STR, "api_key_env": STR, "timeout_seconds": INT}
MODEL = {
    "provider": STR,
    "upstream_model": STR,
    "input_usd_per_million": STR,
    "output_usd_per_million": STR,
    "max_output_tokens": INT,
    "capabilities": ["chat", "streaming", "tools", "vision", "responses", "embeddings"],
    "fallbacks": [STR],
    "tokenizer": ("o200k_base", "cl100k_base", "bytes"),
}


def check_value(where: str, value: Any, spec: Any, errors: list[str]) -> None:
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            errors.append(f"{where}: expected a table")
            return
        for key, sub in value.items():
            path = f"{where}.{key}" if where else key
            if key in spec:
                check_value(path, sub, spec[key], errors)
            elif "*" in spec:
                check_value(path, sub, spec["*"], errors)
            else:
                errors.append(f"{path}: unknown key")
    elif isinstance(spec, tuple):
        if value not in spec:
            errors.append(f"{where}: {value!r} is not one of {', '.join(spec)}")
    elif isinstance(spec, list):
        if not isinstance(value, list):
            errors.append(f"{where}: expected an array")
        elif spec and spec[0] is not STR:
            errors.extend(f"{where}: unknown capability {v!r}" for v in value if v not in spec)
        elif not all(isinstance(v, str) for v in value):
            errors.append(f"{where}: expected strings")
    elif spec == INT and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        errors.append(f"{where}: expected a non-negative integer, got {value!r}")
    elif spec == BOOL and not isinstance(value, bool):
        errors.append(f"{where}: expected true or false, got {value!r}")
    elif spec == STR and not isinstance(value, str):
        errors.append(f"{where}: expected a string, got {value!r}")


def check_settings(doc: dict[str, Any]) -> list[str]:
    errors: list[str] = []
    check_value("", doc, SETTINGS, errors)
    if doc.get("max_body_bytes", 1024) < 1024:
        errors.append("max_body_bytes: must be at least 1024")
    if doc.get("db", {}).get("max_connections", 2) < 2:
        errors.append("db.max_connections: must be at least 2")
    cluster = doc.get("cluster", {})
    if cluster.get("stale_after_seconds", 30) <= cluster.get("heartbeat_seconds", 5):
        errors.append("cluster.stale_after_seconds: must exceed cluster.heartbeat_seconds")
    return errors


def check_models(doc: dict[str, Any]) -> list[str]:
    errors: list[str] = []
    check_value("", doc, {"providers": {"*": PROVIDER}, "models": {"*": MODEL}}, errors)
    providers = doc.get("providers", {})
    models = doc.get("models", {})
    if not models:
        errors.append("models: no model aliases")
    for name, p in providers.items():
        for key in ("kind", "base_url"):
            if key not in p:
                errors.append(f"providers.{name}.{key}: missing")
        if not str(p.get("base_url", "http://")).startswith(("http://", "https://")):
            errors.append(f"providers.{name}.base_url: must start with http:// or https://")
    for alias, m in models.items():
        for key in ("provider", "upstream_model", "input_usd_per_million"):
            if key not in m:
                errors.append(f"models.{alias}.{key}: missing")
        if m.get("provider") not in providers:
            errors.append(f"models.{alias}.provider: no provider named {m.get('provider')!r}")
        for key in ("input_usd_per_million", "output_usd_per_million"):
            if key in m:
                try:
                    if Decimal(m[key]) < 0:
                        raise InvalidOperation
                except (InvalidOperation, TypeError):
                    errors.append(f"models.{alias}.{key}: not a non-negative decimal: {m[key]!r}")
        errors.extend(
            f"models.{alias}.fallbacks: no model named {f!r}"
            for f in m.get("fallbacks", [])
            if f not in models
        )
    return errors


def key_envs(models_doc: dict[str, Any]) -> set[str]:
    """Environment variables the routing table reads provider keys from (for routed models)."""
    providers = models_doc.get("providers", {})
    used = {m.get("provider") for m in models_doc.get("models", {}).values()}
    return {p["api_key_env"] for n, p in providers.items() if n in used and "api_key_env" in p}


def check_env_names(where: str, names: list[str]) -> list[str]:
    """AEX_* names must be a settings key (lower-cased, `__` nests) or a known non-setting."""
    errors = []
    for name in names:
        if not name.startswith("AEX_") or name in NON_SETTING_ENV:
            continue
        path = name[len("AEX_") :].lower().split("__")
        spec: Any = SETTINGS
        for part in path:
            if isinstance(spec, dict) and (part in spec or "*" in spec):
                spec = spec.get(part, spec.get("*"))
            else:
                errors.append(f"{where}: {name} names no setting ({'.'.join(path)})")
                break
        else:
            if isinstance(spec, dict):
                errors.append(f"{where}: {name} names a table, not a setting")
    return errors


def parse_toml(where: str, text: str) -> tuple[dict[str, Any], list[str]]:
    try:
        return tomllib.loads(text), []
    except tomllib.TOMLDecodeError as exc:
        return {}, [f"{where}: invalid TOML: {exc}"]


def cmd_models(path: str) -> list[str]:
    doc, errors = parse_toml(path, Path(path).read_text(encoding="utf-8"))
    return errors or [f"{path}: {e}" for e in check_models(doc)]


def cmd_manifests(path: str) -> list[str]:
    docs = [d for d in yaml.safe_load_all(Path(path).read_text(encoding="utf-8")) if d]
    errors: list[str] = []
    secrets = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "Secret"}
    models_doc: dict[str, Any] = {}
    for d in docs:
        kind, name = d.get("kind"), d.get("metadata", {}).get("name")
        where = f"{kind}/{name}"
        if kind == "ConfigMap":
            data = d.get("data", {})
            settings, errs = parse_toml(f"{where} aex.toml", data.get("aex.toml", ""))
            errors += errs + [f"{where} aex.toml: {e}" for e in check_settings(settings)]
            models_doc, errs = parse_toml(f"{where} models.toml", data.get("models.toml", ""))
            errors += errs + [f"{where} models.toml: {e}" for e in check_models(models_doc)]
        elif kind == "Secret":
            errors += check_env_names(where, list(d.get("stringData", {})))
        elif kind in ("Deployment", "Job"):
            for c in d["spec"]["template"]["spec"]["containers"]:
                errors += check_env_names(
                    f"{where} container {c['name']}", [e["name"] for e in c.get("env", [])]
                )
    # The chart-made Secret must carry every provider key the routing table names.
    for d in docs:
        if d.get("kind") != "Deployment":
            continue
        for c in d["spec"]["template"]["spec"]["containers"]:
            for ref in c.get("envFrom", []):
                secret = secrets.get(ref.get("secretRef", {}).get("name"))
                if secret is None:
                    continue  # existingSecret: its content is the operator's
                have = set(secret.get("stringData", {})) | {e["name"] for e in c.get("env", [])}
                errors += [
                    f"Deployment/{d['metadata']['name']}: routing table reads {env}, which no secret or env sets"
                    for env in sorted(key_envs(models_doc) - have)
                ]
    return errors


def cmd_compose(path: str) -> list[str]:
    config = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    errors: list[str] = []
    for name, svc in config.get("services", {}).items():
        env = svc.get("environment", {}) or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
        errors += check_env_names(f"service {name}", list(env))
        settings: dict[str, Any] = {}
        for key, value in env.items():
            if key.startswith("AEX_") and key not in NON_SETTING_ENV:
                node = settings
                parts = key[4:].lower().split("__")
                for part in parts[:-1]:
                    node = node.setdefault(part, {})
                node[parts[-1]] = value
        keys = settings.get("auth", {}).get("keys", {})
        errors += [
            f"service {name}: auth.keys.{k} is shorter than 32 characters"
            for k, v in keys.items()
            if len(str(v)) < 32
        ]
        models_file = env.get("AEX_MODELS_FILE")
        if not models_file:
            continue
        for volume in svc.get("volumes", []):
            source, target = (
                (volume.get("source"), volume.get("target"))
                if isinstance(volume, dict)
                else (volume.split(":") + [""])[:2]
            )
            if target == models_file:
                doc, errs = parse_toml(source, Path(source).read_text(encoding="utf-8"))
                errors += errs + [f"service {name} {source}: {e}" for e in check_models(doc)]
                errors += [
                    f"service {name}: routing table reads {v}, which its environment does not set"
                    for v in sorted(key_envs(doc) - set(env))
                ]
                break
        else:
            errors.append(f"service {name}: AEX_MODELS_FILE {models_file} is not mounted")
    return errors


def main() -> int:
    commands = {"models": cmd_models, "manifests": cmd_manifests, "compose": cmd_compose}
    if len(sys.argv) != 3 or sys.argv[1] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    errors = commands[sys.argv[1]](sys.argv[2])
    for e in errors:
        print(f"error: {e}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
