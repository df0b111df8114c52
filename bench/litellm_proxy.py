"""The LiteLLM proxy that bench/peers.py compares Hermes with, in a virtual environment of its own.

Why its own environment: adding ``litellm[proxy]`` to the workspace's ``bench`` group changes versions that the
services and tests resolve today (``uv lock`` downgraded ``rich`` 15.0.0 → 13.9.4 and ``python-dateutil`` 4.0.0 →
2.9.0.post0 and moved ``certifi``), so it lives in a virtual environment outside the work tree
(``$XDG_CACHE_HOME/hermes-bench/litellm-venv``, default ``~/.cache/...``; ~580 MB), installed by uv from the fully
pinned ``bench/litellm/requirements.txt`` (compiled from ``requirements.in``, which bounds the version)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import yaml

from hermes_cli.natsserver import free_port

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "litellm" / "requirements.txt"
DEFAULT_VENV = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hermes-bench" / "litellm-venv"


def ensure_venv(venv: Path = DEFAULT_VENV) -> Path:
    """Create ``venv`` if missing and make its packages exactly ``bench/litellm/requirements.txt`` (``uv pip
    sync``: a few seconds when uv's cache has the wheels). Returns the ``litellm`` executable. Raises
    RuntimeError when uv is not on PATH, CalledProcessError when uv fails."""
    uv = shutil.which("uv")
    if uv is None:
        raise RuntimeError("uv is not on PATH: run `source scripts/bootstrap.sh` first")
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run(
            [uv, "venv", "--quiet", "--python", f"{sys.version_info.major}.{sys.version_info.minor}", str(venv)],
            check=True,
        )
    subprocess.run([uv, "pip", "sync", "--quiet", "--python", str(python), str(REQUIREMENTS)], check=True)
    return venv / "bin" / "litellm"


class LiteLLMProxy:
    """``litellm --config <cfg> --num_workers 1`` on a free loopback port: one model ``model`` routed to the
    OpenAI-compatible ``backend_url``, a random ``sk-...`` master key (the proxy refuses to start without one), no
    database (``DATABASE_URL`` removed from its environment), the local model-cost map (no download at start),
    output in ``log_path``."""

    def __init__(self, executable: Path, workdir: Path, backend_url: str, model: str) -> None:
        self.executable = executable
        self.workdir = workdir
        self.backend_url = backend_url
        self.model = model
        self.port = free_port()
        self.master_key = "sk-" + secrets.token_hex(24)
        self.log_path = workdir / "litellm.log"
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 180) -> LiteLLMProxy:
        """Start and wait until ``/health/liveliness`` answers 200. Raises RuntimeError (with the log's tail) when
        the proxy exits or is not up within ``timeout_s``."""
        config = self.workdir / "litellm.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "model_list": [
                        {
                            "model_name": self.model,
                            "litellm_params": {
                                "model": f"openai/{self.model}",
                                "api_base": f"{self.backend_url}/v1",
                                "api_key": "sk-unused",
                            },
                        }
                    ]
                }
            )
        )
        env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "HERMES_HOME", "VIRTUAL_ENV"}}
        env |= {"LITELLM_MASTER_KEY": self.master_key, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.executable),
                    "--config",
                    str(config),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--num_workers",
                    "1",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=5) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"litellm exited with {self.proc.returncode}:\n{self.log_tail()}")
                try:
                    if client.get(f"{self.base_url}/health/liveliness").status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
        raise RuntimeError(f"litellm not up within {timeout_s}s:\n{self.log_tail()}")

    def processes(self) -> list[psutil.Process]:
        """The proxy process and all its descendants (uvicorn runs in the same process with one worker)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        root = psutil.Process(self.proc.pid)
        return [root, *root.children(recursive=True)]

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM to the proxy's process group (it has its own session), SIGKILL after 15 s."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
