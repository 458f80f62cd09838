"""The base every config section derives from: frozen, strict about keys, documented fields.

Following torchtitan, the module that uses a config section defines it; ``trainpipe.config``
only assembles the sections into one tree.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A frozen config section; unknown keys are errors, field docstrings are descriptions."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        use_attribute_docstrings=True,
        validate_default=True,
    )
