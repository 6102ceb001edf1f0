"""Every KRL_* variable that docker-compose.yml, the Dockerfiles and the rendered Helm chart set
names a real setting (pydantic-settings ignores a misspelled variable: the setting would keep its
default silently); and the Dockerfiles install dependencies before they copy the code."""

from __future__ import annotations

import re
import typing

import pytest
import yaml
from pydantic import BaseModel

from krl.allocator.settings import AllocatorSettings
from krl.rollout.settings import RolloutSettings
from krl.trainer.settings import TrainerSettings
from tests.deploy.conftest import ROOT, render

pytestmark = pytest.mark.integration
MODELS = {
    "KRL_ALLOCATOR_": AllocatorSettings,
    "KRL_ROLLOUT_": RolloutSettings,
    "KRL_TRAINER_": TrainerSettings,
}
DOCKERFILES = sorted(ROOT.glob("services/*/Dockerfile*"))


def _models_of(annotation: object) -> list[type[BaseModel]]:
    """The pydantic models an annotation may hold (unions and Annotated unwrapped)."""
    out, todo = [], [annotation]
    while todo:
        a = todo.pop()
        if isinstance(a, type) and issubclass(a, BaseModel):
            out.append(a)
        todo.extend(typing.get_args(a))
    return out


def unknown(key: str) -> str | None:
    """Why `key` names no setting, or None when it does (nested fields with __)."""
    prefix = next((p for p in MODELS if key.startswith(p)), None)
    if prefix is None:
        return f"{key}: no service reads the prefix (known: {', '.join(MODELS)})"
    parts = key[len(prefix) :].lower().split("__")
    models: list[type[BaseModel]] = [MODELS[prefix]]
    for i, part in enumerate(parts):
        fields = [m.model_fields[part] for m in models if part in m.model_fields]
        if not fields:
            return f"{key}: {'.'.join(parts[: i + 1])} is not a field of {models[0].__name__}"
        models = [m for f in fields for m in _models_of(f.annotation)]
    return None


def _compose_keys() -> set[str]:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    keys = set()
    for service in doc["services"].values():  # YAML merge keys (<<: *krl-env) are resolved
        block = service.get("environment", {})
        keys |= set(block if isinstance(block, dict) else (x.split("=")[0] for x in block))
    return {k for k in keys if k.startswith("KRL_")}


def _helm_keys() -> set[str]:
    keys = set()
    for values in sorted((ROOT / "deploy/helm/ci").glob("*.yaml")):
        for m in render("-f", str(values)).values():
            spec = m.get("spec", {})
            pod = spec.get("template", {}).get("spec", {}) or spec.get("jobTemplate", {})
            for c in pod.get("containers", []) + pod.get("initContainers", []):
                keys |= {e["name"] for e in c.get("env", []) if e["name"].startswith("KRL_")}
    return keys


def _dockerfile_keys() -> set[str]:
    text = "\n".join(p.read_text() for p in DOCKERFILES)
    return set(re.findall(r"\b(KRL_[A-Z0-9_]+)=", text))


def test_the_check_knows_a_real_setting_from_a_typo() -> None:
    assert unknown("KRL_ALLOCATOR_MAX_ALLOCATIONS_KEPT") is None
    assert unknown("KRL_ROLLOUT_ENGINE__MODEL") is None
    assert unknown("KRL_ALLOCATOR_REDIS_TIMOUT_S") is not None
    assert unknown("KRL_ROLLOUT_ENGINE__MODLE") is not None
    assert unknown("KRL_ROLLOUTS_MAX_N") is not None


@pytest.mark.parametrize("source", ["compose", "helm", "dockerfiles"])
def test_every_krl_variable_is_a_setting(source: str) -> None:
    keys = {"compose": _compose_keys, "helm": _helm_keys, "dockerfiles": _dockerfile_keys}[source]()
    assert keys, f"found no KRL_* variable in {source}: the parser is wrong"
    problems = [why for k in sorted(keys) if (why := unknown(k))]
    assert not problems, problems


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name + ":" + p.parent.name)
def test_dockerfiles_install_dependencies_before_copying_code(dockerfile) -> None:
    lines = dockerfile.read_text().splitlines()
    deps = next(i for i, x in enumerate(lines) if "-r requirements.txt" in x)
    code = next(i for i, x in enumerate(lines) if x.startswith("COPY src"))
    assert deps < code


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name + ":" + p.parent.name)
def test_dockerfiles_copy_every_folder_the_package_is_built_from(dockerfile) -> None:
    """`pip install .` in the image fails on a package-dir folder that was not copied in."""
    import tomllib

    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    needed = {d.split("/")[0] for d in setup["package-dir"].values()}
    assert {"src", "services", "lab", "clients"} <= needed
    copied = {
        line.split()[1].split("/")[0]
        for line in dockerfile.read_text().splitlines()
        if line.startswith("COPY ") and "--from" not in line
    }
    assert needed <= copied, needed - copied
