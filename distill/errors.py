"""Errors of the distill stage; each message says what went wrong and what to do about it."""

from __future__ import annotations


class ExportError(RuntimeError):
    """A policy cannot be exported as asked (unwritable path, graph off the contract); see the message."""


class ParityError(ExportError):
    """onnxruntime's actions differ from torch's beyond the tolerance; the message names the worst case."""
