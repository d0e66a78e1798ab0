"""The review stage: people pick the best mask, accept pseudo-labels or compare models blind.

``config`` (ReviewConfig), ``build`` (a task folder with precomputed views), ``store`` (SQLite:
items, leases, answers), ``app`` (the FastAPI app and its page in ``static/``), ``results``
(majority, agreement, win rates, Bradley-Terry), ``export``, ``command`` (``segsynth review``).
No Ray: the pages and images are static files and reads come from SQLite.
"""
