"""The process that hosts a run: it trains, saves, logs and serves its viewers (never imports Textual)."""
