"""`chargpt-tui serve`: the dashboard in a browser tab, one viewer process a tab, through textual-serve."""
