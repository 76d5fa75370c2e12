"""Start-up hook that lets PyPI's CUDA build of torchvision load on the CPU-only torch wheel.

Installed into the venv's site-packages by env/torchvision-cpu/install.py and imported from
``labelloop-cuda-stubs.pth`` at every interpreter start-up.  torchvision's ``_C.so`` / ``image.so``
are linked against ``libcudart.so.13``, ``libc10_cuda.so`` and ``libtorch_cuda.so``; the CPU torch
wheel has no CUDA libraries, so ``import torchvision`` fails with
``RuntimeError: operator torchvision::nms does not exist``.  When (and only when) torch has no
CUDA (no torch/lib/libtorch_cuda.so) and torchvision/_C.so exists, this module preloads with
RTLD_GLOBAL:

* the libcudart that the torchvision wheel bundles (torchvision.libs/libcudart.<hash>.so.13,
  SONAME libcudart.so.13), so no system CUDA is needed;
* the two stub libraries built by install.py (SONAMEs libc10_cuda.so and libtorch_cuda.so) that
  define the handful of CUDA symbols torchvision references; they throw if ever called.

At start-up it only does a few stat calls and puts a finder at the front of sys.meta_path; the
preloading (``import ctypes`` plus three dlopens, about 3 ms) happens when ``torchvision`` is first
imported, so interpreters that never touch torchvision pay nothing for it.  torch is never
imported here.  The hook must never break interpreter start-up: every error is swallowed and
recorded in ``error``.  LABELLOOP_CUDA_STUBS=0 disables it; LABELLOOP_CUDA_STUBS=eager preloads
at start-up instead of on first import.
"""

import os
import sys

preloaded = []  # paths loaded with RTLD_GLOBAL by this hook, in order
error = None  # repr of the exception if preloading failed, else None
_libs = None  # what to preload, decided at start-up (None: nothing to do)


def _plan():
    site_dir = os.path.dirname(os.path.abspath(__file__))
    join = os.path.join
    if os.path.exists(join(site_dir, "torch", "lib", "libtorch_cuda.so")):
        return None  # a CUDA torch provides the real libraries
    if not os.path.exists(join(site_dir, "torchvision", "_C.so")):
        return None
    stub_dir = join(os.path.dirname(os.path.dirname(site_dir)), "labelloop-cuda-stubs")
    stubs = [join(stub_dir, "libc10_cuda.so"), join(stub_dir, "libtorch_cuda.so")]
    if not all(os.path.exists(p) for p in stubs):
        return None
    return site_dir, stubs


def preload():
    """Load bundled libcudart and the stubs (once). Safe to call any time; never raises."""
    global _libs, error
    plan, _libs = _libs, None
    if plan is None:
        return
    try:
        site_dir, stubs = plan
        libs = []
        tv_libs = os.path.join(site_dir, "torchvision.libs")
        try:
            names = sorted(os.listdir(tv_libs))
        except OSError:
            names = []
        for name in names:
            if name.startswith("libcudart") and ".so" in name:
                libs.append(os.path.join(tv_libs, name))
                break
        libs.extend(stubs)

        import ctypes

        for path in libs:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            preloaded.append(path)
    except Exception as exc:
        error = repr(exc)


class _TorchvisionImportHook:
    """Meta-path finder that preloads just before the first import of torchvision."""

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            try:
                sys.meta_path.remove(cls)
            except ValueError:
                pass
            preload()
        return None  # let the normal finders import the module


def _install():
    global _libs, error
    try:
        mode = os.environ.get("LABELLOOP_CUDA_STUBS", "")
        if mode == "0":
            return
        _libs = _plan()
        if _libs is None:
            return
        if mode == "eager" or "torchvision" in sys.modules:
            preload()
        else:
            sys.meta_path.insert(0, _TorchvisionImportHook)
    except Exception as exc:  # never break interpreter start-up
        error = repr(exc)


_install()
