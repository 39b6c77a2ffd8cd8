"""Textual's Footer, without its leak.

Footer rebuilds its keys whenever the active bindings change: on every pause and resume, and
every time a modal screen opens or closes. Each new key registers a watcher on the Footer's
`compact` reactive, and Textual drops the watchers of removed keys only when `compact` itself
changes, which here it never does. The old keys stay reachable, so memory grows with every key
press, and every full garbage collection, which stalls the UI thread, scans them all (measured:
about 9 keys a modal open, 17 widgets a press with their caches, gen-2 pauses growing from 10 to
100 ms over a minute of presses). This Footer forgets the removed keys' watchers first.
"""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer
from textual.widgets._footer import FooterKey


class DashboardFooter(Footer):
    """Footer also relabels its keys in place when only their labels or states change (space:
    Pause <-> Resume), rather than removing them all and mounting new ones: a rebuild took about
    90 ms of a viewer's time on a busy 2-core machine, half of what a key press took to show in the
    footer. It does so also in an app without the focus (a background browser tab), where
    Textual's Footer leaves its keys as they were."""

    def bindings_changed(self, screen: Screen) -> None:
        # As Footer does, once the screen has been drawn (the bindings are those of then, not of
        # a screen switch half done), but in an app without the focus too.
        self._bindings_ready = True
        if self.is_attached and screen is self.screen:
            self.call_after_refresh(self._update_keys)

    async def _update_keys(self) -> None:
        if not self._relabel():
            await self.recompose()

    def _relabel(self) -> bool:
        """The keys Footer.compose would show, put into the FooterKeys there are, if they are as
        many and none is grouped; False (rebuild) otherwise."""
        wanted: dict[str, tuple[str, str, str, str, bool, str]] = {}  # action -> its first binding shown
        for _node, binding, enabled, tooltip in self.screen.active_bindings.values():
            if binding.show and binding.action not in wanted:
                wanted[binding.action] = (binding.key, self.app.get_key_display(binding), binding.description,
                                          binding.action, not enabled, tooltip)
        shown = [key for key in self.query(FooterKey) if not key.has_class("-command-palette")]
        if not shown or len(shown) != len(wanted) or any(key.has_class("-grouped") for key in shown):
            return False
        for widget, (key, display, description, action, disabled, tooltip) in zip(shown, wanted.values()):
            looks = (widget.key_display, widget.description, widget._disabled)
            widget.key, widget.key_display, widget.description, widget.action = key, display, description, action
            widget._disabled = disabled
            widget.set_class(disabled, "-disabled")
            widget.tooltip = tooltip or None
            if looks != (display, description, disabled):
                widget.refresh(layout=True)
        return True

    async def recompose(self) -> None:
        watchers = getattr(self, "__watchers", {}).get("compact")
        if watchers:
            watchers[:] = [(node, callback) for node, callback in watchers if node.is_attached and not node._closing]
        await super().recompose()
