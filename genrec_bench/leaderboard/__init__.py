"""Leaderboards with paired significance tests: ``build_leaderboard`` and the ``leaderboard`` CLI command.

Modules: collect (read the store, average seeds), compare (the test family), table (the format-free
model), render / latex / html (the formats), build (the pipeline), cli (arguments). scipy and matplotlib
are imported only when tests run or plots are drawn.
"""

from .build import FILES, FORMATS, build_leaderboard
from .cli import add_arguments, main
from .collect import LeaderboardError
from .table import Leaderboard

__all__ = ["build_leaderboard", "add_arguments", "main", "Leaderboard", "LeaderboardError", "FORMATS", "FILES"]
