"""The Textual dashboard, one viewer of a run: app, state, panels and screens (never imports the host)."""
