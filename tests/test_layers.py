"""The tree reads as the data flow, and nothing reaches back up it.

Each package of ``sentinel`` may import only the packages listed for it here: the stages
below it in the flow and the few shared modules at the top level. Lazy imports inside
functions count; imports under ``if TYPE_CHECKING:`` do not (they never run). The daemon
never imports the offline tools, and no stage imports the daemon's wiring or the CLI.
In tests/ and benchmarks/, no module imports a test module or a conftest.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.e2e_helpers import REPO

_SHARED = {
    "errors",
    "records",
    "config",
    "atomic",
    "logs",
    "progress",
    "mqtt",
    "mqtt_child",
    "natslink",
    "timescale",
}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "records": {"errors"},
    "config": {"errors"},
    "atomic": set(),
    "logs": set(),
    "progress": set(),
    "timescale": {"errors"},  # time settings in readings of a stream's learnt interval
    "mqtt": {"errors", "config"},  # the broker connection the source and the publisher share
    # The MQTT client's own process ([mqtt] client_process): beside mqtt, not in ingest,
    # whose package imports the config at run time (the child reads it only for types).
    "mqtt_child": {"errors", "config", "mqtt"},
    # The NATS connection the shared model registry and the retraining lease share (#24).
    "natslink": {"errors", "config"},
    "ingest": _SHARED,
    "store": _SHARED,
    "model": _SHARED,
    "judge": _SHARED | {"model"},
    "worker": _SHARED | {"model", "judge", "store"},
    "retrain": _SHARED | {"model", "judge", "store"},
    "publish": _SHARED | {"store"},
    # The REST API reads and changes what the CLI does: the store and the model registry;
    # the pipeline's state only through the callables the daemon hands it (ApiContext).
    "api": _SHARED | {"store", "model"},
    # Partition ownership across daemons: which device is in which partition (ingest's
    # subjects) and the judge state it saves (store); the source and the worker only
    # through the callables the daemon hands it.
    "cluster": _SHARED | {"ingest", "store"},
    "daemon": _SHARED
    | {"ingest", "store", "model", "judge", "worker", "retrain", "publish", "api", "cluster"},
    "offline": _SHARED | {"ingest", "store", "model", "judge", "worker", "retrain"},
    "cli": set(),  # anything: filled in below
}


def _runtime_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for n in ast.walk(node))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.update(n.split(".")[1] for n in names if n.startswith("sentinel."))
    return found


def _unit(path: Path) -> str:
    parts = path.relative_to(REPO / "sentinel").with_suffix("").parts
    return parts[0]


def test_every_package_imports_only_what_lies_below_it_in_the_flow() -> None:
    allowed = {**ALLOWED, "cli": set(ALLOWED) - {"cli"}}
    wrong: list[str] = []
    for path in sorted((REPO / "sentinel").rglob("*.py")):
        unit = _unit(path)
        if unit == "__init__":
            continue
        assert unit in allowed, f"{path}: a new package needs its place in ALLOWED"
        for used in sorted(_runtime_imports(path) - allowed[unit] - {unit}):
            wrong.append(f"{path.relative_to(REPO)} imports sentinel.{used}")
    assert not wrong, "\n".join(wrong)


def test_the_top_level_holds_a_handful_of_shared_modules() -> None:
    modules = {p.stem for p in (REPO / "sentinel").glob("*.py")} - {"__init__"}
    assert modules == _SHARED


def _imported_modules(path: Path) -> set[str]:
    """Every module ``path`` names in an import, relative ones resolved; for ``from a import
    b`` both ``a`` and ``a.b`` (b may be a module)."""
    package = path.relative_to(REPO).with_suffix("").parts[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else ()
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_no_test_module_imports_another_or_a_conftest() -> None:
    """Fakes and helpers that several test files share live in helper modules
    (tests/fakes.py, tests/*_helpers.py, tests/<package>/helpers.py). Importing a test module
    ties its edits to every importer; a conftest is pytest's to load (issue #20)."""
    wrong: list[str] = []
    for path in sorted([*(REPO / "tests").rglob("*.py"), *(REPO / "benchmarks").rglob("*.py")]):
        for module in sorted(_imported_modules(path)):
            name = module.rsplit(".", 1)[-1]
            if module.startswith("tests.") and (name.startswith("test_") or name == "conftest"):
                wrong.append(f"{path.relative_to(REPO)} imports {module}")
    assert not wrong, "\n".join(wrong)
