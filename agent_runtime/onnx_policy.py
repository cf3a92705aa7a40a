"""The real inference backend: an exported ONNX policy run by onnxruntime, its spec read from the file.

An exported policy has one input per observation entry of its spec, named like it, with a dynamic
batch axis first (``pixels`` uint8 (B, H, W, 3k), ``proprio`` float32 (B, P), or ``state`` float32
(B, S)); one output ``action`` float32 (B, A), or (B, H, A) for a policy whose spec declares an action
chunk of H, already within the bounds; and the spec as JSON in its
metadata. Loading checks all of that, so a wrong file fails at start-up, not at the first request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from agent_runtime.spec import ONNX_ACTION_OUTPUT, PolicySpec, spec_from_onnx_metadata

log = logging.getLogger(__name__)

_ORT_TYPES = {"uint8": "tensor(uint8)", "float32": "tensor(float)"}


class PolicyFileError(ValueError):
    """An ONNX file is not a policy this runtime can serve; the message says what is wrong."""


class OnnxPolicy:
    """An exported policy in onnxruntime. Implements the server's ``InferenceBackend``.

    Args:
        path: the ``.onnx`` file made by ``agent-runtime export``.
        threads: onnxruntime intra-op threads. One suits small state policies (no thread hand-off);
            more help large batches of a pixel student.
    """

    def __init__(self, path: Path, threads: int = 1) -> None:
        if threads < 1:
            raise ValueError(f"threads is {threads}; it must be at least 1")
        if not path.is_file():
            raise FileNotFoundError(f"no policy file at {path}; export one with `agent-runtime export`")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle onnxruntime threads otherwise spin, burning cores that other work on a small robot host
        # or server needs (shared/FACTS.md measured this stealing from training).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise PolicyFileError(f"{path}: onnxruntime cannot load it: {exc}") from None
        self.path = path
        self._spec = spec_from_onnx_metadata(self._session.get_modelmeta().custom_metadata_map, source=str(path))
        self._check_signature()
        self._inputs = self._spec.observation_names

    @property
    def spec(self) -> PolicySpec:
        """The policy spec embedded in the file."""
        return self._spec

    def infer(self, observations: Mapping[str, np.ndarray]) -> np.ndarray:
        """Actions for a batch of observations.

        Args:
            observations: entry name to array with a batch axis first, e.g. ``pixels`` uint8 (B, H, W, 3k).

        Returns:
            float32 (B, A) actions, or (B, H, A) chunks.
        """
        feed = {name: observations[name] for name in self._inputs}
        result: Any = self._session.run([ONNX_ACTION_OUTPUT], feed)[0]
        return np.asarray(result)

    def _check_signature(self) -> None:
        where = str(self.path)
        inputs = {i.name: i for i in self._session.get_inputs()}
        names = self._spec.observation_names
        if set(inputs) != set(names):
            raise PolicyFileError(
                f"{where}: the graph's inputs are {sorted(inputs)}, but its spec names the observations {list(names)}"
            )
        for entry in self._spec.observations:
            node = inputs[entry.name]
            if node.type != _ORT_TYPES[entry.dtype]:
                raise PolicyFileError(f"{where}: input {entry.name!r} is {node.type}; the spec says {entry.dtype}")
            _check_dims(where, f"input {entry.name!r}", node.shape, entry.shape)
        outputs = {o.name: o for o in self._session.get_outputs()}
        if ONNX_ACTION_OUTPUT not in outputs:
            raise PolicyFileError(
                f"{where}: the graph has no output {ONNX_ACTION_OUTPUT!r} (its outputs: {sorted(outputs)})"
            )
        action = outputs[ONNX_ACTION_OUTPUT]
        if action.type != "tensor(float)":
            raise PolicyFileError(f"{where}: output 'action' is {action.type}; it must be float32")
        _check_dims(where, "output 'action'", action.shape, self._spec.action_shape)


def _check_dims(where: str, what: str, graph_shape: list[Any], spec_shape: tuple[int, ...]) -> None:
    """A graph shape is (batch, *spec_shape); symbolic (named or unknown) dims are accepted as is."""
    if len(graph_shape) != 1 + len(spec_shape):
        raise PolicyFileError(
            f"{where}: {what} has shape {graph_shape}; expected (batch, {', '.join(map(str, spec_shape))})"
        )
    if isinstance(graph_shape[0], int) and graph_shape[0] != -1:
        raise PolicyFileError(
            f"{where}: {what} has a fixed batch size {graph_shape[0]}; the server batches requests, so export "
            "the policy with a dynamic batch axis"
        )
    for got, want in zip(graph_shape[1:], spec_shape, strict=True):
        if isinstance(got, int) and got != want:
            raise PolicyFileError(f"{where}: {what} has shape {graph_shape}; the spec says (batch, {spec_shape})")


def watch_policy_file(
    path: Path,
    on_change: Callable[[OnnxPolicy], None],
    stop: threading.Event,
    threads: int = 1,
    interval_s: float = 1.0,
) -> threading.Thread:
    """Reload ``path`` whenever it changes and hand the new policy to ``on_change`` (e.g. ``server.swap``).

    Runs in a daemon thread until ``stop`` is set. A change is taken once the file's size and time stamp
    have held still for one interval (replace the file atomically, by renaming a finished one onto it).
    A file that fails to load, or that ``on_change`` refuses, is logged and the served policy kept.
    """

    def signature() -> tuple[int, int, int] | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    served = signature()  # taken before the thread starts, so a change made right after this call is seen

    def watch() -> None:
        nonlocal served
        while not stop.wait(interval_s):
            seen = signature()
            if seen is None or seen == served or stop.wait(interval_s) or signature() != seen:
                continue
            served = seen
            try:
                policy = OnnxPolicy(path, threads)
                on_change(policy)
            except (ValueError, OSError) as exc:  # SpecError and PolicyFileError are ValueErrors
                log.error("%s changed but was not swapped in; still serving the previous policy: %s", path, exc)
            except Exception:  # anything else, too: a watcher that died would never swap again, silently
                log.exception("%s changed but was not swapped in; still serving the previous policy", path)
            else:
                log.info("%s changed; swapped in the new policy", path)

    thread = threading.Thread(target=watch, name="policy-file-watcher", daemon=True)
    thread.start()
    return thread
