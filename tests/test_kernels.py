"""The committee kernels' numba cache: kept across processes, never stale after an edit of the closed forms it
compiles from another file (learnscope/gaussian_integrals.py), and never cleaned by deleting files in the
package. (The kernels' numerics are tested against their numpy definitions in tests/models/test_committee.py
and tests/theory/test_committee_ode.py.)"""

import json
import subprocess
import sys

from learnscope.runs.committee import kernels
from tests.conftest import REPO

SRC = REPO / "src" / "learnscope"

# Runs a kernel in a fresh process and says whether the cache was on, how many compiled versions it loaded
# from the cache, and which files of the package's __pycache__ folders went missing meanwhile. With argv[1]
# "edited", the closed forms read as edited (their source plus a comment), as after an edit of
# gaussian_integrals.py that FORMULAS_SHA256 does not know yet.
_PROBE = """
import importlib.util, inspect, json, sys, types
from pathlib import Path
# the package without its __init__ (which imports torch: seconds): kernels imports only gaussian_integrals
package = Path(importlib.util.find_spec("learnscope").submodule_search_locations[0])
sys.modules["learnscope"] = types.ModuleType("learnscope")
sys.modules["learnscope"].__path__ = [str(package)]
before = {str(p) for p in package.rglob("__pycache__/*")}
if sys.argv[1] == "edited":
    real = inspect.getsource
    inspect.getsource = lambda obj: real(obj) + "# edited\\n"
from learnscope.runs.committee import kernels
if sys.argv[1] == "edited":
    inspect.getsource = real
kernels._g(0.5, 0)  # the smallest kernel: quick to compile where the cache is off
missing = sorted(before - {str(p) for p in package.rglob("__pycache__/*")})
hits = sum(kernels._g.stats.cache_hits.values())
print(json.dumps({"cache": kernels._CACHE, "hits": hits, "missing": missing}))
"""


def _probe(mode: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True, cwd=REPO
    )
    return json.loads(done.stdout.splitlines()[-1])


def test_the_kernels_know_the_digest_of_the_closed_forms_they_compile():
    digest = kernels.formulas_digest()
    assert digest == kernels.FORMULAS_SHA256, (
        "learnscope/gaussian_integrals.py changed: set kernels.FORMULAS_SHA256 = "
        f"{digest!r} (numba's cache does not see edits to another file; until then the kernels compile "
        "in memory)"
    )


def test_a_compiled_kernel_is_cached_for_the_next_process_and_nothing_is_deleted():
    _probe("current")  # compiles, or finds the cache
    again = _probe("current")
    assert again["cache"] and again["hits"] == 1, again
    assert again["missing"] == []


def test_edited_formulas_compile_in_memory_and_leave_the_cache_files_alone():
    _probe("current")  # so that there are cache files to keep
    edited = _probe("edited")
    assert not edited["cache"] and edited["hits"] == 0, edited
    assert edited["missing"] == []  # the former clean-up deleted every kernels.*.nbi/nbc here
