"""The filters every query takes, declared once in ``FILTERS``.

The command line's options (``cli.options.with_filters``) and the HTTP API's query parameters
(``cli.web.app.filters_dependency``) are both built from this table, and both hand the values
to ``parse_filters``, which checks them the same way for every front end. The module imports
no SQL stack: ``elmsearch --help`` builds the options without loading it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from indexer.search import Filters

SEXES = {"F": "F", "M": "M", "FEMALE": "F", "MALE": "M"}


class FilterError(ValueError):
    """A filter value that cannot be used (a bad parameter: exit code 2 or 1, HTTP 422)."""


def normalise_sex(value: str | None) -> str | None:
    """``F`` or ``M`` from F, M, female or male (any case, spaces ignored); None for no value.

    Raises
    ------
    FilterError
        Anything else (one line).
    """
    if value is None or str(value).strip() == "":
        return None
    try:
        return SEXES[str(value).strip().upper()]
    except KeyError:
        raise FilterError(f"sex: expected F or M (or female/male), got {value!r}") from None


# What ranks a text search (indexer.hybrid): the reports and the EEG fused, or one of them. Read
# by the CLI's --source and the API's ``source`` as the filters are.
SOURCES = ("hybrid", "reports", "eeg")

@dataclasses.dataclass(frozen=True)
class FilterField:
    """One filter: its name (a ``Filters`` field), value type, help and bounds.

    Attributes
    ----------
    name : str
        The ``Filters`` field and the API's query parameter; the option is ``--name-with-dashes``.
    kind : type
        ``str``, ``float`` or ``datetime.date``.
    help : str
        One line, shared by ``--help`` and the OpenAPI description.
    ge : float | None
        Smallest value allowed (numbers).
    max_length : int | None
        Longest value allowed (text).
    normalise : callable | None
        Turns a given value into the stored one, raising ``FilterError`` (checked early by
        the CLI, so that a bad value is a usage error).
    """

    name: str
    kind: type
    help: str
    ge: float | None = None
    max_length: int | None = None
    normalise: Callable[[Any], Any] | None = None

    @property
    def option(self) -> str:
        """The command-line option, e.g. ``--age-min``."""
        return "--" + self.name.replace("_", "-")


FILTERS: tuple[FilterField, ...] = (
    FilterField("sex", str, "F or M (female, male; any case).", max_length=16, normalise=normalise_sex),
    FilterField("age_min", float, "Youngest age (years).", ge=0),
    FilterField("age_max", float, "Oldest age (years).", ge=0),
    FilterField("after", dt.date, "Recorded on/after (YYYY-MM-DD)."),
    FilterField("before", dt.date, "Recorded before (YYYY-MM-DD)."),
    FilterField("montage", str, "Montage folder, e.g. 01_tcp_ar.", max_length=64),
    FilterField("min_duration", float, "Shortest recording (s).", ge=0),
    FilterField("has_event", str, "Only recordings with an event whose label or meaning holds this text, "
                "e.g. seizure.", max_length=128),
)
FILTER_NAMES = tuple(f.name for f in FILTERS)


def _day(value, name: str) -> dt.date | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise FilterError(f"{name}: expected a date YYYY-MM-DD, got {value!r}") from None


def parse_filters(**values) -> Filters:
    """``Filters`` from front-end values, keyed by the names in ``FILTERS``.

    Dates may be ``date``, ``datetime`` or ``YYYY-MM-DD``; values left out or None do not filter.

    Raises
    ------
    FilterError
        An unknown filter, a value out of range, an unknown sex, age_min above age_max (one
        line naming it).
    """
    from indexer.search import Filters

    unknown = set(values) - set(FILTER_NAMES)
    if unknown:
        raise FilterError(f"unknown filter {sorted(unknown)[0]!r} (filters: {', '.join(FILTER_NAMES)})")
    out = {}
    for field in FILTERS:
        v = values.get(field.name)
        if field.normalise is not None:
            v = field.normalise(v)
        if field.kind is dt.date:
            v = _day(v, field.name)
        elif field.kind is float and v is not None:
            if not (0 <= float(v) < 1e6):
                raise FilterError(f"{field.name}: expected a number >= 0, got {v!r}")
            v = float(v)
        elif field.kind is str:
            v = v or None
        out[field.name] = v
    if out["age_min"] is not None and out["age_max"] is not None and out["age_min"] > out["age_max"]:
        raise FilterError(f"age_min {out['age_min']:g} is above age_max {out['age_max']:g}: no recording can match")
    return Filters(**out)
