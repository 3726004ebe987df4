"""Pictures of training: a loss curve that redraws in a notebook while the run goes on."""

from __future__ import annotations


class LiveLossPlot:
    """A training callback that redraws a loss curve in a notebook as records arrive.

    Pass it as ``train(..., callback=LiveLossPlot())``. It draws with
    matplotlib into one display slot that it updates in place, so it shows up
    in JupyterLab, in exported notebooks and in a terminal-less CI run alike.
    """

    def __init__(self, every: int = 1, keys: tuple[str, ...] = ("loss",), title: str = "training loss"):
        self.every, self.keys, self.title = every, keys, title
        self.records: list[dict] = []
        self._handle = None

    def __call__(self, record: dict) -> None:
        self.records.append(record)
        if len(self.records) % self.every:
            return
        import matplotlib.pyplot as plt
        from IPython.display import display

        fig, ax = plt.subplots(figsize=(6, 3))
        for key in self.keys:
            points = [(r["step"], r[key]) for r in self.records if key in r]
            if points:
                ax.plot(*zip(*points), label=key, marker="." if len(points) < 30 else None)
        ax.set_xlabel("step")
        ax.set_title(self.title)
        ax.legend()
        fig.tight_layout()
        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)
        plt.close(fig)
