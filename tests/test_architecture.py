"""The shape of the package: imports that point down the layer table of docs/architecture.md (read from the
source, deferred imports included), so no import circle; registries that import nothing of the package; and a
repository that refers to nothing outside itself."""

import re
import textwrap

from tests.conftest import REPO
from tests.import_graph import cycles, import_graph, layer_table, layer_violations

SRC = REPO / "src" / "learnscope"


def test_the_package_has_no_import_cycle():
    found = cycles(import_graph(SRC, "learnscope"))
    assert not found, "import cycles: " + "; ".join(" <-> ".join(cycle) for cycle in found)


def test_every_import_points_down_the_layer_table_of_the_architecture_page():
    """docs/architecture.md's table "Modules and what they may import" is the rule, read from the page: every
    module of the package is in exactly one row, and none imports a module of a row above its own. Moving a
    file needs only its row updated."""
    page = (REPO / "docs" / "architecture.md").read_text()
    layers, layer_of, problems = layer_table(page, SRC, "learnscope")
    assert not problems, "the layer table of docs/architecture.md: " + "; ".join(problems)
    violations = layer_violations(import_graph(SRC, "learnscope"), layers, layer_of)
    assert not violations, "imports up the layer table of docs/architecture.md:\n" + "\n".join(violations)


def test_registries_and_base_sections_import_nothing_of_the_package_but_errors():
    graph = import_graph(SRC, "learnscope")
    assert graph["learnscope.registry"] <= {"learnscope.errors"}
    assert graph["learnscope.atomic"] == set()
    assert graph["learnscope.sections"] <= {"learnscope.errors", "learnscope.registry"}


def _package(root, files: dict[str, str]):
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root / "pkg"


def test_the_cycle_finder_names_a_cycle_through_a_deferred_import_and_passes_a_tree(tmp_path):
    acyclic = _package(
        tmp_path / "a",
        {
            "__init__.py": "from . import kinds\nfrom .config import Config\n",
            "registry.py": "REGISTRY = {}\n",
            "config.py": "from .registry import REGISTRY\n",
            "kinds/__init__.py": "from .one import One\n",
            "kinds/one.py": "from ..registry import REGISTRY\nfrom ..config import Config\n",
        },
    )
    assert cycles(import_graph(acyclic, "pkg")) == []
    cyclic = _package(
        tmp_path / "b",
        {
            "__init__.py": "",
            "registry.py": "def load():\n    from . import kinds\n",  # the registry importing its kinds
            "config.py": "from .registry import load\n",
            "kinds/__init__.py": "from ..config import load\n",
            "typing_only.py": "import typing\nif TYPE_CHECKING:\n    from . import config\n",
        },
    )
    assert cycles(import_graph(cyclic, "pkg")) == [["pkg.config", "pkg.kinds", "pkg.registry"]]


_TABLE = """# Architecture

## Modules and what they may import

| layer | modules | role |
|---|---|---|
| entry points | `__init__.py`, `cli.py` | the command |
| orchestration | `tracking.py` | mirrors of the records |
| kinds | `kinds/` | registered builders |
| leaves | `store.py`, `errors.py` | the run store; errors |

Text after the table.
"""


def test_the_layer_check_names_an_import_up_the_table_and_a_module_in_no_row(tmp_path):
    files = {
        "__init__.py": "from . import cli\n",
        "cli.py": "from .tracking import Mirror\nfrom .kinds import one\n",
        "tracking.py": "from .store import RunDir\n",
        "kinds/__init__.py": "",
        "kinds/one.py": "from ..store import RunDir\n",
        "errors.py": "",
        "store.py": "from .errors import StoreError\n\n\ndef append():\n    from . import tracking\n",
    }
    package = _package(tmp_path / "a", files)
    layers, layer_of, problems = layer_table(_TABLE, package, "pkg")
    assert layers == ["entry points", "orchestration", "kinds", "leaves"] and problems == []
    assert layer_of["pkg"] == "entry points" and layer_of["pkg.kinds.one"] == "kinds"
    assert layer_violations(import_graph(package, "pkg"), layers, layer_of) == [
        "pkg.store (leaves) imports pkg.tracking (orchestration)"  # deferred, inside a function
    ]
    layered = _package(tmp_path / "b", {**files, "store.py": "from .errors import StoreError\n"})
    assert layer_violations(import_graph(layered, "pkg"), layers, layer_of) == []
    stray = _package(tmp_path / "c", {**files, "stray.py": ""})
    table = _TABLE.replace("`store.py`, `errors.py`", "`store.py`, `errors.py`, `tracking.py`, `gone.py`")
    assert layer_table(table, stray, "pkg")[2] == [
        "pkg.tracking is in two rows: orchestration, leaves",
        "`gone.py` (leaves) names no module of pkg",
        "pkg.stray is in no row of the layer table",
    ]


def test_nothing_refers_to_a_path_outside_the_repository():
    outside = re.compile(r"\.\./shared|shared/data|shared/reference|/work/")
    hits = []
    for folder in ("src", "configs", "tests", "benchmarks"):
        for path in sorted((REPO / folder).rglob("*")):
            if path.suffix in (".py", ".toml", ".json", ".md") and path != __file__:
                for number, line in enumerate(path.read_text().splitlines(), start=1):
                    if outside.search(line) and path.name != "test_architecture.py":
                        hits.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_one_study_driver_and_every_study_module_registered_with_buildable_scales(capsys):
    from learnscope.studies import STUDIES
    from tests.conftest import cli

    drivers = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if "def run_study(" in p.read_text())
    assert drivers == ["studies/base.py"]
    modules = {p.stem for p in (SRC / "studies").glob("*.py")} - {"__init__", "base"}
    assert set(STUDIES) == modules
    for name, cls in STUDIES.items():
        assert {"tiny", "small", "paper"} <= set(cls.scales), name
        for scale in cls.scales:
            assert cls(scale).configs(), (name, scale)
    code, out, _ = cli("study", "list", capsys=capsys)
    assert code == 0 and all(name in out for name in STUDIES)


# The distribution that provides each importable name, where the two differ.
DISTRIBUTION_OF = {"sklearn": "scikit-learn", "tomli_w": "tomli-w", "yaml": "pyyaml"}


def test_every_third_party_import_is_a_declared_dependency():
    """A fresh `make demo` installs only what pyproject.toml names: an import of a package that is merely
    installed beside another (click, which typer >= 0.2x no longer depends on, came with mlflow) works in
    the test environment and fails on a user's machine."""
    import ast
    import sys
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = [
        *project["dependencies"],
        *(d for extra in project["optional-dependencies"].values() for d in extra),
    ]
    names = {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower().replace("_", "-") for d in declared}
    missing = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top == "learnscope":
                    continue
                if DISTRIBUTION_OF.get(top, top).lower().replace("_", "-") not in names:
                    missing.append(f"{path.relative_to(REPO)}: import {module}")
    assert not missing, f"imports of packages pyproject.toml does not declare: {missing}"
