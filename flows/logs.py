"""Console logs of ``petflow run``: one line per event; tracebacks stay in the run's logs in the UI."""

from __future__ import annotations

import logging


class _NoTraceback(logging.Formatter):
    """Formats a record like ``inner`` but without its traceback (the record itself is left intact, so the
    handler that ships logs to the Prefect API still sends the traceback to the UI)."""

    def __init__(self, inner: logging.Formatter):
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def console_without_tracebacks() -> None:
    """Keep Prefect's console logs to one line per event: a failed stage's traceback (repeated by every
    enclosing task and flow run) stays in the run's logs in the UI, and ``run`` ends with one error line."""
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in list(logging.root.manager.loggerDict))]
    for handler in {h for lg in loggers for h in lg.handlers if isinstance(h, PrefectConsoleHandler)}:
        if not isinstance(handler.formatter, _NoTraceback):
            handler.setFormatter(_NoTraceback(handler.formatter or logging.Formatter()))
