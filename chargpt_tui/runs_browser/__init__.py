"""The runs browser: the runs under a folder as a table, compared on one chart, opened, forked."""
