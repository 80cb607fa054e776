"""What several end-to-end tests share: a tiny English corpus and a stand-in for Ctrl-C."""

LINES = [
    "the cat sat on the mat.",
    "the dog sat on the log.",
    "a cat and a dog ran to the hat.",
    "the bird sang on the mat and the log.",
]
"""Four short lines that share most of their characters and words."""


def corpus_text(lines: int) -> str:
    """``lines`` lines cycling through :data:`LINES`, each ending in a newline (24 lines: ~720
    characters)."""
    return "\n".join(LINES[i % len(LINES)] for i in range(lines)) + "\n"


class InterruptAfter:
    """Stands in for the loop's Ctrl-C handler (``loop.StopOnInterrupt``): asks to stop after
    ``steps`` steps, as a Ctrl-C at that moment would (the loop saves its state and stops)."""

    def __init__(self, steps: int) -> None:
        self.steps, self.calls = steps, 0

    def __call__(self) -> "InterruptAfter":
        return self

    def __enter__(self) -> "InterruptAfter":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    @property
    def requested(self) -> bool:
        self.calls += 1  # read once after every step
        return self.calls >= self.steps
