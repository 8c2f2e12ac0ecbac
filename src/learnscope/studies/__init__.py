"""The studies: one module per paper on the `Study` protocol (base.py), run by the one driver `run_study`.
Importing this package registers the built-in studies."""

from . import double_descent, gaussian_equivalence, increasing_complexity, neural_collapse, sphere_regimes  # noqa: F401
from .base import STUDIES, Study, StudyResult, get_study, register_study, run_study

__all__ = ["STUDIES", "Study", "StudyResult", "get_study", "register_study", "run_study"]
