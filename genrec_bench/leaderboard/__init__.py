"""Leaderboards with paired significance tests: ``build_leaderboard`` and the ``leaderboard`` CLI command.

Modules, each importing only those before it: collect (read the store, average seeds, column labels),
compare (paired tests and the family's correction), claims (claims and their verdicts), table (the
format-free model), render / latex / html (the formats), build (the pipeline), cli (arguments).
tests/test_import_layers.py keeps it so. scipy and matplotlib are imported only when tests run or plots are drawn.
"""

from .build import FILES, FORMATS, build_leaderboard
from .cli import add_arguments, main
from .collect import LeaderboardError
from .table import Leaderboard

__all__ = ["build_leaderboard", "add_arguments", "main", "Leaderboard", "LeaderboardError", "FORMATS", "FILES"]
