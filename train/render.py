"""Offscreen camera frames of a MuJoCo model, identical in training and deployment.

We render with ``mujoco.Renderer`` on the environment's own model instead of gymnasium's
``render()``: gymnasium's offscreen viewer makes its GL context current only when it is created, so
with several rendering environments in one process frames silently come from the wrong context
(black or foreign frames). ``mujoco.Renderer`` makes its own context current on every render. It
does not do so when it is freed, though: its ``close()`` (also run by the garbage collector) frees
its MuJoCo render context in whatever GL context is current, which deletes the buffers of *another*
renderer; that one then returns garbage frames. :class:`_OwnContextRenderer` makes its own context current first,
and closes renderers still open at exit before mujoco terminates the EGL display.
Headless GL is chosen in ``train/__init__.py`` (``MUJOCO_GL=egl``), before mujoco is imported.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import threading
import weakref

import mujoco
import numpy as np

from train.task_preset import CameraConfig, RenderQuality

# Shadow map size for the "shadows" quality: keeps the depth cue at about 195 frames/s here,
# against about 31 with MuJoCo's default 4096 map and 4x multisampling.
_SHADOW_MAP_SIZE = 512


def load_triton_before_gl() -> None:
    """Import triton (if installed) before the first GL context, so a later import cannot crash.

    PyPI's CUDA builds of torch (2.15 here) import triton lazily, e.g. when timm is first imported.
    Measured on CPU-2: importing triton *after* an EGL context exists (Mesa's llvmpipe, which links
    its own LLVM) kills the process with a segmentation fault; imported before, both work and frames
    are identical. Costs about 0.25 s once, and nothing where triton is not installed.
    """
    if importlib.util.find_spec("triton") is not None:
        importlib.import_module("triton")


def _configure_quality(model: mujoco.MjModel, quality: RenderQuality) -> None:
    """Set the model's visual quality. Must run before the GL context is created."""
    if quality == "default":
        return
    model.vis.quality.offsamples = 0
    if quality == "shadows":
        model.vis.quality.shadowsize = _SHADOW_MAP_SIZE


def _camera(model: mujoco.MjModel, config: CameraConfig) -> mujoco.MjvCamera | int:
    if config.model_camera is not None:
        return model_camera_index(model, config.model_camera)
    camera = mujoco.MjvCamera()
    camera.distance = config.distance
    camera.elevation = config.elevation_deg
    camera.azimuth = config.azimuth_deg
    camera.lookat[:] = config.lookat
    if config.track_body is None:
        camera.type = mujoco.mjtCamera.mjCAMERA_FREE
    else:
        body_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, config.track_body)
        if body_id < 0:
            raise ValueError(f"camera track_body {config.track_body!r} is not a body of this model")
        camera.type = mujoco.mjtCamera.mjCAMERA_TRACKING
        camera.trackbodyid = body_id
        if any(config.lookat):
            # MuJoCo's tracking camera looks at the body's subtree centre of mass and overwrites
            # lookat; an offset needs a free camera moved with the body at each frame (FrameRenderer).
            camera.type = mujoco.mjtCamera.mjCAMERA_FREE
    return camera


def model_camera_index(model: mujoco.MjModel, camera: int | str) -> int:
    """The index of one of the model's own cameras; a missing one raises, listing the model's cameras."""
    index = camera if isinstance(camera, int) else mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
    if not 0 <= index < model.ncam:
        known = ", ".join(f"{i}: {model.camera(i).name or '(unnamed)'}" for i in range(model.ncam)) or "none"
        raise ValueError(f"camera model_camera {camera!r} is not a camera of this model; its cameras are {known}")
    return index


_live_renderers: weakref.WeakSet[_OwnContextRenderer] = weakref.WeakSet()
"""Renderers not yet closed: closed at exit, before mujoco's own exit handler terminates the EGL display."""
_unreleasable: list[mujoco.MjrContext] = []
"""Render contexts that no safe GL context could be made for: kept, so their finalisers never run."""
_exit_hook_lock = threading.Lock()
_exit_hook_registered = False


def _close_live_renderers() -> None:
    for renderer in list(_live_renderers):
        renderer.close()


_last_rendered = threading.local()
"""``.renderer``: a weak reference to the renderer that last drew on this thread (its context is current)."""


class _OwnContextRenderer(mujoco.Renderer):
    """``mujoco.Renderer`` whose ``close()`` (and so its finaliser) frees its GL objects in its own context.

    mujoco 3.x frees the render context's framebuffers and textures by name in the current GL
    context; when another renderer drew last, those names are that renderer's, and its next frames are
    garbage. This renderer makes its own context current before freeing, and afterwards makes current
    again the context of the renderer that last drew on this thread: the garbage collector may run a
    finaliser in the middle of that renderer's ``render()``, between its making its context current
    and its drawing.
    """

    def __init__(self, model: mujoco.MjModel, height: int, width: int) -> None:
        global _exit_hook_registered
        super().__init__(model, height=height, width=width)
        # mujoco registers its EGL display's termination at exit when it creates its first context;
        # registered after that, this hook runs first (atexit is last in, first out), so a renderer
        # still open at exit frees its objects while the display is alive instead of failing noisily.
        with _exit_hook_lock:
            if not _exit_hook_registered:
                atexit.register(_close_live_renderers)
                _exit_hook_registered = True
        _live_renderers.add(self)

    def render(self, *, out: np.ndarray | None = None) -> np.ndarray:
        _last_rendered.renderer = weakref.ref(self)
        return super().render(out=out)

    def close(self) -> None:
        gl_context = getattr(self, "_gl_context", None)
        if gl_context is not None and getattr(self, "_mjr_context", None) is not None:
            try:
                gl_context.make_current()
            except Exception:
                # The context is gone (interpreter shutdown) or current on another thread (EGL allows
                # one): its objects die with the context itself, and must not be freed here.
                self._release_render_context_elsewhere()
        _live_renderers.discard(self)
        super().close()
        last = getattr(_last_rendered, "renderer", None)
        drawing = last() if last is not None else None
        if drawing is not None and drawing is not self and getattr(drawing, "_gl_context", None) is not None:
            drawing._gl_context.make_current()

    def _release_render_context_elsewhere(self) -> None:
        """Drop the MuJoCo render context without freeing its GL objects in the current GL context.

        Dropping an ``MjrContext`` frees its framebuffers and textures *by name* in whatever context
        is current: done plainly here, it would delete the objects of the renderer that drew last on
        this thread (measured: that renderer's next frames were garbage). So it is dropped while a
        scratch context is current, where those names name nothing; its own objects go when its own
        GL context is destroyed. If no scratch context can be made (interpreter shutdown), the render
        context is kept referenced for the life of the process instead.
        """
        mjr_context: mujoco.MjrContext | None = getattr(self, "_mjr_context", None)
        self._mjr_context = None
        if mjr_context is None:
            return
        try:
            scratch = mujoco.GLContext(1, 1)
        except Exception:
            _unreleasable.append(mjr_context)
            return
        try:
            scratch.make_current()
        except Exception:
            _unreleasable.append(mjr_context)
        else:
            mjr_context.free()
        finally:
            del mjr_context  # the last reference, if kept nowhere: its finaliser runs while scratch is current
            scratch.free()


class FrameRenderer:
    """Renders RGB frames of ``model``'s state from a configured camera.

    Args:
        model: the MuJoCo model; its visual quality settings are changed for ``quality``.
        size: frames are ``size`` x ``size`` pixels.
        camera: where to look from.
        quality: render quality (see :data:`train.presets.RenderQuality`).
    """

    def __init__(self, model: mujoco.MjModel, size: int, camera: CameraConfig, quality: RenderQuality) -> None:
        load_triton_before_gl()
        _configure_quality(model, quality)
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, size)
        model.vis.global_.offheight = max(model.vis.global_.offheight, size)
        try:
            self._renderer: mujoco.Renderer | None = _OwnContextRenderer(model, height=size, width=size)
        except mujoco.FatalError as exc:
            if "framebuffer" in str(exc).lower():
                raise RuntimeError(
                    f"MuJoCo could not make a {size}x{size} offscreen framebuffer ({exc}): this OpenGL driver "
                    "allows less; use a smaller image_size"
                ) from exc
            raise RuntimeError(
                f"MuJoCo could not create an OpenGL context ({exc}). MUJOCO_GL is "
                f"{os.environ.get('MUJOCO_GL', 'unset')}. On a machine without a display, set "
                "MUJOCO_GL=egl before mujoco is first imported: export it in the shell, or import "
                "the train package before mujoco."
            ) from exc
        if quality == "fast":
            self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        self._camera = _camera(model, camera)
        self._follow: tuple[int, np.ndarray] | None = None
        """(body, offset): a free camera that looks at the body's subtree centre of mass plus offset."""
        if isinstance(self._camera, mujoco.MjvCamera) and camera.track_body is not None and any(camera.lookat):
            self._follow = (self._camera.trackbodyid, np.asarray(camera.lookat, dtype=np.float64))
        self.size = size

    def render(self, data: mujoco.MjData) -> np.ndarray:
        """The current frame of ``data``: uint8 (size, size, 3), a fresh array."""
        if self._renderer is None:
            raise RuntimeError("this FrameRenderer is closed")
        if self._follow is not None:
            body, offset = self._follow
            assert isinstance(self._camera, mujoco.MjvCamera)
            self._camera.lookat[:] = data.subtree_com[body] + offset
        self._renderer.update_scene(data, camera=self._camera)
        return self._renderer.render()

    def close(self) -> None:
        """Free the GL context. Safe to call twice."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
