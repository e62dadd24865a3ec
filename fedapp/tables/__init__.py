"""Comparison tables in the layout of the papers: plan a sweep of runs (and its tuning phase), run
it with resume, then tabulate and render it. The command is ``python -m fedapp.tables``
(:mod:`fedapp.tables.cli` documents it).

- :mod:`fedapp.tables.plan`: which runs a sweep needs, and what each run directory already holds.
- :mod:`fedapp.tables.run`: executing the runs, with progress lines and Ctrl-C handling.
- :mod:`fedapp.tables.tuning`: the grid, the tuning runs and each method's selected values.
- :mod:`fedapp.tables.render`: the tables (markdown, CSV, bar charts) and the display names.
- :mod:`fedapp.tables.cli`: the command line.
"""

from fedapp.tables.cli import build_parser, main
from fedapp.tables.plan import (
    COMPLETED,
    NO_PRESET,
    RunSpec,
    plan_sweep,
    resolved_config,
    run_state,
    setting_overrides,
    summary_status,
)
from fedapp.tables.render import (
    COLUMNS,
    SELECTIONS,
    collect,
    describe_settings,
    display_name,
    markdown,
    mean_std,
    table_cells,
    write_csv,
    write_outputs,
)
from fedapp.tables.run import SweepInterrupted, execute, run_sweep
from fedapp.tables.tuning import Selection, TuningPlan, parse_grid, plan_tuning, select

__all__ = [
    "COLUMNS", "COMPLETED", "NO_PRESET", "SELECTIONS", "RunSpec", "Selection", "SweepInterrupted",
    "TuningPlan", "build_parser", "collect", "describe_settings", "display_name", "execute", "main", "markdown",
    "mean_std", "parse_grid", "plan_sweep", "plan_tuning", "resolved_config", "run_state", "run_sweep", "select",
    "setting_overrides", "summary_status", "table_cells", "write_csv", "write_outputs",
]
