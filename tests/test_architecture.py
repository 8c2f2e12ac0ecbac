"""The shape of the package: no import circle (read from the source), registries that import nothing of the
package, and a repository that refers to nothing outside itself."""

import re
import textwrap

from tests.conftest import REPO
from tests.import_graph import cycles, import_graph

SRC = REPO / "src" / "learnscope"


def test_the_package_has_no_import_cycle():
    found = cycles(import_graph(SRC, "learnscope"))
    assert not found, "import cycles: " + "; ".join(" <-> ".join(cycle) for cycle in found)


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
