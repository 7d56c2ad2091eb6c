"""ml_bridge's benchmark suite: ``make bench`` (``python bench/run.py``); see docs/performance.md."""
