"""Errors a user can act on.

Every problem a user can fix (bad data, bad config, impossible hardware request) raises
`LmlabError` with a message that names the file/line/key, the bad value and the fix. The CLI
prints such errors without a traceback and exits with status 2; anything else is a bug and keeps
its traceback.
"""
from __future__ import annotations


class LmlabError(Exception):
    """A problem the user can fix; the message says how."""


class ConfigError(LmlabError):
    """Invalid configuration: unknown key, wrong type, missing value, impossible combination."""


class DataError(LmlabError):
    """Malformed or missing data: the message names file, line and field."""


class TrainingDiverged(LmlabError):
    """Loss became NaN/inf; the last good checkpoint is kept."""
