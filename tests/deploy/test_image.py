"""The Dockerfile, statically (scripts/compose-e2e.sh builds and runs it for real): a pinned official base
that can be swapped, the locked dependencies and the code in separate layers, no pip at runtime, a
non-root user, and a lock that still covers pyproject.toml."""

from __future__ import annotations

import re

import checks
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

DOCKERFILE = (checks.ROOT / "Dockerfile").read_text()
LOCK = (checks.ROOT / "requirements.lock").read_text()


def instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in DOCKERFILE.splitlines()
                                         if not line.lstrip().startswith("#")))
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", text, re.M)]


def stages() -> dict[str, list[tuple[str, str]]]:
    found: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for op, args in instructions():
        if op == "FROM":
            current = args.split()[-1] if " AS " in args.upper() else args
            found[current] = []
        elif current:
            found[current].append((op, args))
    return found


def test_base_image_is_pinned_and_replaceable() -> None:
    assert not re.search(r"^#\s*syntax=", DOCKERFILE, re.M), "a syntax line makes BuildKit pull a frontend"
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, re.M)
    assert base and re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base.group(1))
    froms = [args for op, args in instructions() if op == "FROM"]
    assert all(f.startswith(("${PYTHON_IMAGE}", "venv", "deps", "code")) for f in froms), froms
    assert re.search(rf"ATLASPIPE_VERSION={re.escape(checks.VERSION)}", DOCKERFILE)


def test_dependencies_are_locked_and_hash_checked() -> None:
    installs = [args for op, args in stages()["venv"] if op == "RUN" and "pip install" in args]
    assert len(installs) == 1
    assert "--require-hashes" in installs[0] and "--no-deps" in installs[0] and "requirements.lock" in installs[0]
    assert "--mount=type=secret,id=pip-ca" in installs[0], "the CA bundle reaches the install step only"
    code = [args for op, args in stages()["code"] if op == "RUN"]
    assert any("--no-deps" in a and "--root /opt/code" in a for a in code), "the code stage adds no dependency"


def test_runtime_has_dependency_and_code_layers_and_no_pip() -> None:
    runtime = stages()["runtime"]
    copies = [args for op, args in runtime if op == "COPY"]
    assert copies == ["--from=deps /opt/atlaspipe /opt/atlaspipe",
                      "--from=code /opt/code/opt/atlaspipe/ /opt/atlaspipe/"], copies
    deps = " ".join(args for op, args in stages()["deps"] if op == "RUN")
    assert "pip uninstall" in deps and " pip " in f"{deps} "
    runs = " ".join(args for op, args in runtime if op == "RUN")
    assert "! python3 -m pip --version" in runs, "the build must fail if pip survived"
    users = [args for op, args in runtime if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert not [args for op, args in runtime if op == "ENTRYPOINT"]


def test_dockerignore_keeps_the_build_context_small() -> None:
    ignored = [line.strip() for line in (checks.ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.lstrip().startswith("#")]
    assert {".git", ".venv", "tests", "compose", "helm", "**/.env"} <= set(ignored)
    for needed in ("pyproject.toml", "celeryconfig.py", "atlaspipe", "requirements.lock", "README.md"):
        assert needed not in ignored


def locked() -> dict[str, Version]:
    return {canonicalize_name(name): Version(version)
            for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", LOCK, re.M)}


def test_lock_covers_the_dependencies_of_pyproject() -> None:
    pins = locked()
    stale = []
    for text in checks.PYPROJECT["project"]["dependencies"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        if name not in pins:
            stale.append(f"{requirement.name} is missing")
        elif pins[name] not in requirement.specifier:
            stale.append(f"{requirement.name}=={pins[name]} does not satisfy {requirement.specifier}")
    build = Requirement(checks.PYPROJECT["build-system"]["requires"][0])
    if pins.get(canonicalize_name(build.name)) not in build.specifier:
        stale.append(f"build requirement {build} is not locked")
    assert not stale, "requirements.lock is stale (regenerate it, see its header): " + "; ".join(stale)


def test_every_locked_file_is_hash_pinned() -> None:
    hashed = re.findall(r"^[A-Za-z0-9_.-]+==\S+(?:\s*\\\n\s+--hash=sha256:[0-9a-f]{64})+", LOCK, re.M)
    assert len(hashed) == len(locked()) > 50
