"""Progress of a board image build (rich): one bar per phase, the latest output line beside it.
Without a terminal, one line per phase instead."""

from __future__ import annotations

import sys


class BuildProgress:
    def __init__(self):
        from rich.console import Console
        from rich.progress import (BarColumn, Progress, SpinnerColumn, TextColumn,
                                   TimeElapsedColumn)
        self.console = Console(stderr=True)
        self.live = self.console.is_terminal
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.fields[phase]:13}"),
                                 BarColumn(), TimeElapsedColumn(),
                                 TextColumn("{task.description}", style="dim"),
                                 console=self.console, disable=not self.live)
        self.tasks: dict[str, int] = {}
        self.current = None

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def update(self, phase: str, fraction, line: str) -> None:
        if phase not in self.tasks:
            if self.current is not None:
                self.progress.update(self.tasks[self.current], completed=1)
            self.tasks[phase] = self.progress.add_task(line[:70], total=1, phase=phase)
            self.current = phase
            if not self.live:
                print(f"board image: {phase}: {line}", file=sys.stderr, flush=True)
        self.progress.update(self.tasks[phase], description=line.strip()[:70],
                             completed=fraction if fraction is not None else None)
