"""``vaezoo compare``: entries x seeds trained and evaluated as ordinary runs (cells), and a
leaderboard with paired statistics rebuilt from those cells alone (see :mod:`vaezoo.compare.stats`)."""
