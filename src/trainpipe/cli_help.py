"""Help text shared by every ``trainpipe`` command: wrapped descriptions, one example each.

parser = argparse.ArgumentParser(..., **example_epilog("trainpipe run --output runs"))
"""

from __future__ import annotations

import argparse


class ExampleHelpFormatter(argparse.HelpFormatter):
    """Wraps descriptions; keeps the example epilog line by line as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("example"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def example_epilog(example: str, note: str = "") -> dict:
    """The ``epilog`` and ``formatter_class`` arguments of a parser showing ``example``."""
    epilog = f"example:\n  {example}\n" + (f"\n{note}\n" if note else "")
    return {"epilog": epilog, "formatter_class": ExampleHelpFormatter}
