"""The runs browser (`chargpt-tui runs` on a terminal, or `serve` of a folder of runs): a table of
the runs under a folder, with the settings that differ between them as columns, sorted and
filtered; the runs selected with space overlaid on one chart (compare_view.py); Enter opens a
run's dashboard, g generates from its best.pt, f forks it.

It reads the run directories (config.json, the end of metrics.jsonl), never a run's socket:
however many browsers are open, no training process knows or waits. Running runs are read again
every few seconds, only what was appended.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.coordinate import Coordinate
from textual.filter import LineFilter
from textual.widgets import DataTable, Footer, Input, Static

from chargpt_tui.dashboard.screens import GenerateScreen
from chargpt_tui.dashboard.terminal_safe import with_control_characters_removed
from chargpt_tui.dashboard.widgets.compare_chart import PALETTE, CompareChart
from chargpt_tui.wire.run_curves import RunCurves
from chargpt_tui.wire.run_table import FIXED, RunRow, differing, read_row, read_rows, sorted_rows
from chargpt_tui.wire.runs import is_run_dir, load_run_model
from model.tokenizer import CharTokenizer

from .compare_view import compare_series, compare_side
from .fork_screen import ForkScreen, start_fork

STATE_STYLES = {"running": "bold green", "finished": "", "stopped": "yellow", "failed": "red", "crashed": "red"}


@dataclass
class BrowserState:
    """What the browser keeps while a dashboard it opened is in front (runs_browser/session.py)."""

    sort_key: str = "name"
    reverse: bool = False
    filter: str = ""
    selected: dict[str, int] = field(default_factory=dict)  # run path -> its colour (PALETTE)
    cursor: str | None = None  # the run under the cursor
    notice: str = ""  # said as the browser opens again (why a run could not be opened)


class RunsApp(App[str | None]):
    """Exits with the path of the run to open (Enter), or None."""

    CSS_PATH = ["../dashboard/screens.tcss", "runs.tcss"]
    TITLE = "chargpt-tui runs"
    BINDINGS = [
        Binding("space", "select", "Select"),
        Binding("g", "generate", "Generate"),
        Binding("f", "fork", "Fork"),
        Binding("s", "sort", "Sort"),
        Binding("S", "sort_reverse", "Reverse", show=False),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("t", "x_axis", "Step/time"),
        Binding("l", "log_scale", "Log y"),
        Binding("v", "curves", "Train/val"),
        Binding("escape", "leave_filter", "Table", show=False),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, root: Path, state: BrowserState | None = None, read_only: bool = False,
                 poll_s: float = 2.0, browser: bool = False) -> None:
        super().__init__()
        self.root = root
        self.browser = browser  # a tab of `serve`: Enter opens the run in a tab of its own
        self.state = state or BrowserState()
        self.read_only = read_only
        self.poll_s = poll_s
        self.rows: dict[str, RunRow] = {}
        self.curves: dict[str, RunCurves] = {}
        self.loaded = False  # the first reading of the folder is shown (tests wait for it)
        self._sizes: dict[str, int] = {}  # metrics.jsonl's size when each row was read

    def get_line_filters(self) -> list[LineFilter]:
        return with_control_characters_removed(super().get_line_filters())

    def compose(self) -> ComposeResult:
        yield Static(Text(f"runs in {self.root} · reading…"), id="runs-title")
        yield Input(self.state.filter, placeholder="/ filters: words any cell holds", id="filter")
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="compare"):
            yield CompareChart(id="compare-chart")
            with VerticalScroll(id="compare-side"):
                yield Static(id="compare-text")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#compare").display = False
        self.query_one(DataTable).focus()
        if self.state.notice:
            self.notify(self.state.notice, severity="warning", timeout=10, markup=False)
        self._load()
        self.set_interval(self.poll_s, self._poll)

    # ---- reading the runs ----------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="read")
    def _load(self) -> None:
        rows = read_rows(self.root)
        sizes = {r.path: _size(r.path) for r in rows}
        self.call_from_thread(self._loaded, rows, sizes)

    def _loaded(self, rows: list[RunRow], sizes: dict[str, int]) -> None:
        self.rows = {r.path: r for r in rows}
        self._sizes = sizes
        self.state.selected = {p: c for p, c in self.state.selected.items() if p in self.rows}
        self.loaded = True
        self._show_table()
        self._update_compare(read=True)

    def _poll(self) -> None:
        if self.loaded:
            self._reread()

    def _reread(self) -> None:
        """(On the app's thread: what the reading thread looks at, as it is now.)"""
        states = {p: r.summary.state for p, r in self.rows.items()}
        self._read_changes(states, [self.curves[p] for p in self.state.selected if p in self.curves])

    @work(thread=True, exclusive=True, group="read")
    def _read_changes(self, states: dict[str, str], selected: list[RunCurves]) -> None:
        """Runs that changed or appeared since (a fork, a run started elsewhere), and the curves
        of the selected runs: only what was appended to their metrics.jsonl."""
        changed: list[RunRow] = []
        on_disk = _run_dirs(self.root)
        for path in on_disk:
            size = _size(path)
            if path not in states or size != self._sizes.get(path) or states[path] == "running":
                changed.append(read_row(Path(path)))
                self._sizes[path] = size
        gone = [p for p in states if p not in on_disk]
        grew = [c for c in selected if c.update()]
        if changed or gone or grew:
            self.call_from_thread(self._changed, changed, gone, bool(grew))

    def _changed(self, changed: list[RunRow], gone: list[str], grew: bool) -> None:
        before = {p: r.summary for p, r in self.rows.items()}
        for path in gone:
            self.rows.pop(path, None)
            self.state.selected.pop(path, None)
        self.rows.update({r.path: r for r in changed})
        if gone or any(before.get(r.path) != r.summary for r in changed):
            if gone or not self._update_cells(changed):
                self._show_table()
        if grew or gone:
            self._update_compare()

    # ---- the table -----------------------------------------------------------------------------
    def visible_rows(self) -> list[RunRow]:
        shown = [r for r in self.rows.values() if r.matches(self.state.filter)]
        return sorted_rows(shown, self.state.sort_key, self.state.reverse)

    def columns(self) -> list[tuple[str, str]]:
        """The fixed columns, then the settings that differ between the runs listed."""
        fixed = [c for c in FIXED if c[0] != "parent" or any(r.parent for r in self.rows.values())]
        return [("mark", " "), *fixed, *differing(self.rows.values())]

    def _update_cells(self, changed: list[RunRow]) -> bool:
        """The changed runs' cells, in place, when the columns and the rows' order are as shown:
        a table built anew at every read (every 2 s while a run trains) would jump back to its
        left edge. False when they are not."""
        table = self.query_one(DataTable)
        columns = [key for key, _ in self.columns()]
        rows = [r.path for r in self.visible_rows()]
        if [c.value for c in table.columns] != columns or [r.value for r in table.rows] != rows:
            return False
        for row in changed:
            if row.path in table.rows:
                for key in columns:
                    table.update_cell(row.path, key, self._cell(row, key), update_width=True)
        self._title(len(rows))
        return True

    def _show_table(self) -> None:
        table = self.query_one(DataTable)
        cursor = self._cursor_path() or self.state.cursor
        scrolled_x = table.scroll_x  # kept: the table is rebuilt, not moved sideways
        table.clear(columns=True)
        columns = self.columns()
        for key, heading in columns:
            arrow = (" ▼" if self.state.reverse else " ▲") if key == self.state.sort_key else ""
            table.add_column(Text(heading + arrow), key=key)
        rows = self.visible_rows()
        for row in rows:
            table.add_row(*[self._cell(row, key) for key, _ in columns], key=row.path)
        if cursor is not None and cursor in {r.path for r in rows}:
            table.move_cursor(row=table.get_row_index(cursor))
        self.call_after_refresh(table.scroll_to, x=scrolled_x, animate=False)
        self._title(len(rows))

    def _cell(self, row: RunRow, key: str) -> Text:
        if key == "mark":
            colour = self.state.selected.get(row.path)
            return Text("●", style=f"color({PALETTE[colour]})") if colour is not None else Text(" ")
        return Text(row.cell(key), style=STATE_STYLES.get(row.summary.state, "") if key == "state" else "")

    def _title(self, shown: int) -> None:
        total = len(self.rows)
        count = f"{total} run{'s' if total != 1 else ''}" + (f", {shown} shown" if shown != total else "")
        heading = dict(self.columns()).get(self.state.sort_key, self.state.sort_key)
        picked = f" · {len(self.state.selected)} selected" if self.state.selected else ""
        self.query_one("#runs-title", Static).update(
            Text(f"runs in {self.root} · {count} · sorted by {heading}{picked}"))

    def _cursor_path(self) -> str | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0)).row_key.value

    def _cursor_row(self) -> RunRow | None:
        path = self._cursor_path()
        return self.rows.get(path) if path else None

    @on(DataTable.HeaderSelected)
    def _header_clicked(self, event: DataTable.HeaderSelected) -> None:
        key = str(event.column_key.value)
        if key != "mark":
            self.state.reverse = not self.state.reverse if key == self.state.sort_key else False
            self.state.sort_key = key
            self._show_table()

    @on(DataTable.RowSelected)
    def _open(self, event: DataTable.RowSelected) -> None:
        """Enter: the run's dashboard (attached if it runs, else as it was left)."""
        self.state.cursor = path = event.row_key.value
        if not self.browser:
            self.exit(path)
        elif Path(path).parent == self.root:  # served by serve at run/NAME/ (browser/serve.py)
            self.open_url(f"run/{quote(Path(path).name)}/", new_tab=True)
        else:
            self.notify(f"open it with: chargpt-tui serve {path}", markup=False)

    @on(Input.Changed, "#filter")
    def _filter(self, event: Input.Changed) -> None:
        self.state.filter = event.value
        if self.loaded:
            self._show_table()

    @on(Input.Submitted, "#filter")
    def action_leave_filter(self) -> None:
        self.query_one(DataTable).focus()

    def action_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_sort(self) -> None:
        """The next column."""
        keys = [k for k, _ in self.columns() if k != "mark"]
        at = keys.index(self.state.sort_key) if self.state.sort_key in keys else -1
        self.state.sort_key, self.state.reverse = keys[(at + 1) % len(keys)], False
        self._show_table()

    def action_sort_reverse(self) -> None:
        self.state.reverse = not self.state.reverse
        self._show_table()

    # ---- comparing -----------------------------------------------------------------------------
    def action_select(self) -> None:
        row = self._cursor_row()
        if row is None:
            return
        if row.path in self.state.selected:
            del self.state.selected[row.path]
        else:
            taken = set(self.state.selected.values())
            free = [c for c in range(len(PALETTE)) if c not in taken]
            if not free:
                self.notify(f"at most {len(PALETTE)} runs at once; unselect one first", severity="warning")
                return
            self.state.selected[row.path] = free[0]
        table = self.query_one(DataTable)
        table.update_cell(row.path, "mark", self._cell(row, "mark"))
        self._title(table.row_count)
        self._update_compare(read=True)

    def _update_compare(self, read: bool = False) -> None:
        compare = self.query_one("#compare")
        compare.display = bool(self.state.selected)
        if not self.state.selected:
            return
        for path in self.state.selected:
            if path not in self.curves:
                self.curves[path] = RunCurves(Path(path))
                read = True
        if read:
            self._read_curves([self.curves[p] for p in self.state.selected])
            return
        chart = self.query_one(CompareChart)
        picked = [(self.rows[p], self.curves[p], c) for p, c in self.state.selected.items() if p in self.rows]
        chart.set_series(compare_series(picked, chart.by_time))
        self.query_one("#compare-text", Static).update(compare_side(picked))

    @work(thread=True, exclusive=True, group="curves")
    def _read_curves(self, selected: list[RunCurves]) -> None:
        for curves in selected:
            curves.update()  # a long run's first reading: a fraction of a second, not in the UI's thread
        self.call_from_thread(self._update_compare)

    def action_x_axis(self) -> None:
        chart = self.query_one(CompareChart)
        chart.by_time = not chart.by_time
        self._update_compare()

    def action_log_scale(self) -> None:
        self.query_one(CompareChart).toggle_log_scale()

    def action_curves(self) -> None:
        self.query_one(CompareChart).cycle_shown()

    # ---- from the table ------------------------------------------------------------------------
    def action_generate(self) -> None:
        row = self._cursor_row()
        if row is None:
            return
        path = Path(row.path)
        which = "best.pt" if (path / "best.pt").is_file() else "ckpt.pt"
        vocab = row.config.get("vocab")
        if not (path / which).is_file() or not isinstance(vocab, str) or not vocab:
            self.notify(f"{row.name} has no checkpoint to generate from yet", severity="warning", markup=False)
            return
        self.push_screen(GenerateScreen(lambda: load_run_model(path, which), CharTokenizer(vocab),
                                        source=f"{row.name}/{which}"))

    def action_fork(self) -> None:
        row = self._cursor_row()
        if row is None:
            return
        if self.read_only:
            self.notify("a read-only view starts no runs", severity="warning")
            return
        if not (Path(row.path) / "ckpt.pt").is_file():
            self.notify(f"{row.name} has no checkpoint to fork from yet", severity="warning", markup=False)
            return
        self.push_screen(ForkScreen(row), lambda flags: self._start_fork(row, flags) if flags else None)

    @work(thread=True)
    def _start_fork(self, row: RunRow, flags: list[str]) -> None:
        out_dir, problem = start_fork(row, flags)
        if problem:
            self.call_from_thread(self.notify, problem, title="the fork did not start", severity="error",
                                  timeout=12, markup=False)
        else:
            self.call_from_thread(self.notify, f"{out_dir.name} trains, forked from {row.name}", markup=False)
            self.call_from_thread(self._reread)


def _size(path: str) -> int:
    try:
        return os.stat(Path(path) / "metrics.jsonl").st_size
    except OSError:
        return -1


def _run_dirs(root: Path) -> set[str]:
    if is_run_dir(root):
        return {str(root)}
    try:
        return {str(p) for p in root.iterdir() if p.is_dir() and is_run_dir(p)}
    except OSError:
        return set()
