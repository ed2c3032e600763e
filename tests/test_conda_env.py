"""envs/conta.yaml works wherever Snakemake copies it (issue 15 item 3).

`snakemake --sdm conda` copies the env file under .snakemake/conda/, so a path relative to
it (the former `-e ..`) resolves elsewhere. The file must name packages only, carry every
runtime dependency of pyproject.toml (Snakemake itself aside), and the rules' scripts must
find conta_core beside them where the package is not installed.
"""
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
ENV = yaml.safe_load((REPO / "envs" / "conta.yaml").read_text())


def requirements() -> list[str]:
    out = []
    for item in ENV["dependencies"]:
        out.extend(item["pip"] if isinstance(item, dict) else [item])
    return out


def name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_env_names_packages_not_paths():
    for requirement in requirements():
        assert not re.match(r"^\s*(-e|--editable|\.|/|~|file:|git\+)", requirement), requirement
        assert "/" not in name(requirement) and ".." not in requirement, requirement


def test_env_carries_every_runtime_dependency():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {name(r) for r in project["dependencies"]} - {"snakemake", "snakemake-executor-plugin-slurm"}
    assert wanted <= {name(r) for r in requirements()}, wanted - {name(r) for r in requirements()}


def test_scripts_find_conta_core_without_the_package_installed():
    # Drop the editable install's finder: conta_core is then importable only through the
    # path the scripts' _common module adds.
    code = f"""
import sys
sys.meta_path = [f for f in sys.meta_path if not str(getattr(f, "__module__", "")).startswith("__editable__")]
sys.path = [p for p in sys.path if p.rstrip("/") != {str(REPO)!r}]
try:
    import conta_core
    raise SystemExit("conta_core importable without _common: the check proves nothing")
except ModuleNotFoundError:
    pass
sys.path.insert(0, {str(REPO / "workflow_scripts")!r})
import _common, conta_core
print(conta_core.__file__)
"""
    result = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert Path(result.stdout.strip()) == REPO / "conta_core" / "__init__.py"
