"""The one exception the search engine raises for bad input."""

from __future__ import annotations


class SearchError(ValueError):
    """A spec, history or request the engine cannot work with; the message names the problem."""
