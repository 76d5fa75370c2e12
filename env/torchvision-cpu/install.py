"""Make PyPI's CUDA build of torchvision usable on the CPU-only torch wheel in this venv.

Run with the venv's python (scripts/setup.sh does):  .venv/bin/python env/torchvision-cpu/install.py

What it does (idempotent; prints one line):
1. Finds torch and torchvision in this interpreter's site-packages, without importing them.
   If torch ships libtorch_cuda.so (a CUDA build) it does nothing.
2. Derives, with readelf, the CUDA symbols that torchvision's extension modules (_C.so,
   image.so) import without a version from libc10_cuda.so / libtorch_cuda.so: undefined,
   unversioned, global symbols in the c10::cuda / at::cuda namespaces that no library in
   torch/lib defines.  Falls back to a known list if binutils are missing.
3. Compiles cuda_stubs.cpp twice with g++ into <venv>/lib/labelloop-cuda-stubs/ (SONAMEs
   libc10_cuda.so and libtorch_cuda.so), copies the start-up hook labelloop_cuda_stubs.py into
   site-packages and writes labelloop-cuda-stubs.pth that imports it.
4. Verifies in a subprocess that torchvision's ops and image extension load and work.
A stamp in the stub directory (sha256 of the inputs and of the installed files) makes a second
run a no-op; a deleted or damaged output triggers a rebuild.
"""

from __future__ import annotations

import compileall
import hashlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CPP = os.path.join(HERE, "cuda_stubs.cpp")
HOOK_SRC = os.path.join(HERE, "labelloop_cuda_stubs.py")
HOOK_NAME = "labelloop_cuda_stubs.py"
PTH_NAME = "labelloop-cuda-stubs.pth"
# .pth lines that start with "import" are executed by site.py at start-up; the try/except keeps a
# missing or broken hook module from printing a traceback on every interpreter start.
PTH_TEXT = 'import sys; exec("try:\\n import labelloop_cuda_stubs\\nexcept Exception:\\n pass")\n'
STUB_DIR_NAME = "labelloop-cuda-stubs"
STAMP_NAME = "build.sha256"
PREFIX = "labelloop CUDA stubs:"

SONAMES = ("libc10_cuda.so", "libtorch_cuda.so")
# c10::cuda::*, at::cuda::* (functions, const member functions, variables).
NAMESPACE = re.compile(r"^_ZNK?(?:3c10|2at)4cuda")
ZERO_RETURNING = re.compile(r"device_count")  # "no CUDA devices" is the honest CPU answer

# Used only when readelf is not available: what torchvision 0.28.0 (cu13 wheel) needs.
FALLBACK_SYMBOLS = {
    "_ZN2at4cuda26getCurrentDevicePropertiesEv": "FUNC",
    "_ZN3c104cuda12device_countEv": "FUNC",
    "_ZN3c104cuda14ExchangeDeviceEa": "FUNC",
    "_ZN3c104cuda14MaybeSetDeviceEa": "FUNC",
    "_ZN3c104cuda14current_deviceEv": "FUNC",
    "_ZN3c104cuda17getStreamFromPoolEba": "FUNC",
    "_ZN3c104cuda17getStreamFromPoolEia": "FUNC",
    "_ZN3c104cuda20CUDACachingAllocator9allocatorE": "OBJECT",
    "_ZN3c104cuda20getCurrentCUDAStreamEa": "FUNC",
    "_ZN3c104cuda20getDefaultCUDAStreamEa": "FUNC",
    "_ZN3c104cuda20setCurrentCUDAStreamENS0_10CUDAStreamE": "FUNC",
    "_ZN3c104cuda29c10_cuda_check_implementationEiPKcS2_jb": "FUNC",
    "_ZN3c104cuda9GetDeviceEPa": "FUNC",
    "_ZN3c104cuda9SetDeviceEab": "FUNC",
    "_ZNK3c104cuda10CUDAStream11synchronizeEv": "FUNC",
    "_ZNK3c104cuda10CUDAStream5queryEv": "FUNC",
    "_ZNK3c104cuda10CUDAStream6streamEv": "FUNC",
}

VERIFY = r"""
import torch, torchvision
from torchvision.extension import _has_ops
assert _has_ops(), "torchvision C++ ops did not load"
boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], dtype=torch.float32)
keep = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)
assert keep.tolist() == [0, 2], keep
img = torch.zeros(3, 8, 8, dtype=torch.uint8)
assert torchvision.io.decode_jpeg(torchvision.io.encode_jpeg(img)).shape == (3, 8, 8)
"""


def say(msg: str, code: int = 0) -> None:
    print(f"{PREFIX} {msg}", file=sys.stderr if code else sys.stdout)
    sys.exit(code)


def run(cmd: list[str]) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def find_site_packages() -> str | None:
    paths = sysconfig.get_paths()
    for key in ("purelib", "platlib"):
        d = paths.get(key)
        if d and os.path.isfile(os.path.join(d, "torch", "__init__.py")):
            return d
    return None


def needed_libs(so: str) -> set[str]:
    out = run(["readelf", "-d", "-W", so])
    return set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out))


def undefined_cuda_symbols(so: str) -> dict[str, str]:
    """Unversioned, undefined, global c10::cuda / at::cuda symbols of `so` -> ELF type."""
    found = {}
    for line in run(["readelf", "-W", "--dyn-syms", so]).splitlines():
        f = line.split()
        # Num: Value Size Type Bind Vis Ndx Name
        if len(f) < 8 or f[6] != "UND" or f[4] != "GLOBAL":
            continue
        name = f[7]
        if "@" in name or not NAMESPACE.match(name):
            continue
        found[name] = "OBJECT" if f[3] in ("OBJECT", "TLS") else "FUNC"
    return found


def defined_symbols(libs: list[str]) -> set[str]:
    names: set[str] = set()
    for lib in libs:
        for line in run(["nm", "-D", "--defined-only", lib]).splitlines():
            f = line.split()
            if f:
                names.add(f[-1].split("@")[0])
    return names


def derive_symbols(site: str, tv_sos: list[str]) -> tuple[dict[str, str], str]:
    if not (shutil.which("readelf") and shutil.which("nm")):
        return dict(FALLBACK_SYMBOLS), "built-in list (readelf/nm not found)"
    symbols: dict[str, str] = {}
    for so in tv_sos:
        if needed_libs(so) & set(SONAMES):
            symbols.update(undefined_cuda_symbols(so))
    torch_lib = os.path.join(site, "torch", "lib")
    torch_libs = [os.path.join(torch_lib, n) for n in sorted(os.listdir(torch_lib)) if ".so" in n]
    clash = defined_symbols([p for p in torch_libs if os.path.isfile(p)]) & symbols.keys()
    for name in clash:  # never interpose on something the real torch defines
        del symbols[name]
    return symbols, "derived with readelf from " + ", ".join(os.path.basename(p) for p in tv_sos)


def render(symbols: dict[str, str], soname: str) -> str:
    lines = [f"// Generated by install.py for {soname}; do not edit.\n"]
    for name in sorted(symbols):
        if (name.startswith(("_ZN2at", "_ZNK2at")) != (soname == "libtorch_cuda.so")):
            continue
        if symbols[name] == "OBJECT":
            macro = "LABELLOOP_STUB_OBJECT"
        elif ZERO_RETURNING.search(name):
            macro = "LABELLOOP_STUB_ZERO"
        else:
            macro = "LABELLOOP_STUB_THROW"
        lines.append(f"{macro}({name})\n")
    return "".join(lines)


def write_if_changed(path: str, data: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            if f.read() == data:
                return False
    except OSError:
        pass
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return True


def byte_compile(path: str) -> None:
    """Write the hook's .pyc (PYTHONDONTWRITEBYTECODE may be set): saves ~1.5 ms per start-up."""
    try:
        compileall.compile_file(path, quiet=2)
    except Exception:
        pass


def main() -> None:
    t0 = time.monotonic()
    if sys.prefix == sys.base_prefix and "--allow-system" not in sys.argv:
        say(f"refusing to install into the system interpreter {sys.executable}; run with the venv's python", 2)
    site = find_site_packages()
    if site is None:
        say(f"torch is not installed for {sys.executable}; install requirements first", 1)
    torch_cuda = os.path.join(site, "torch", "lib", "libtorch_cuda.so")
    if os.path.exists(torch_cuda):
        say(f"torch has CUDA ({torch_cuda} exists): nothing to do")
    tv_dir = os.path.join(site, "torchvision")
    if not os.path.isfile(os.path.join(tv_dir, "_C.so")):
        say(f"{tv_dir}/_C.so not found (torchvision not installed?): nothing to do")
    tv_sos = sorted(
        os.path.join(root, n) for root, _, files in os.walk(tv_dir) for n in files if n.endswith(".so")
    )

    symbols, origin = derive_symbols(site, tv_sos)
    if not symbols:
        say("torchvision's extensions do not import CUDA symbols (CPU build?): nothing to do")
    sources = {so: render(symbols, so) for so in SONAMES}
    with open(CPP, "rb") as f:
        cpp = f.read()
    with open(HOOK_SRC, "rb") as f:
        hook = f.read()

    stub_dir = os.path.join(os.path.dirname(os.path.dirname(site)), STUB_DIR_NAME)
    stamp_path = os.path.join(stub_dir, STAMP_NAME)
    digest = hashlib.sha256()
    for part in (cpp, hook, PTH_TEXT.encode(), *(sources[s].encode() for s in SONAMES)):
        digest.update(hashlib.sha256(part).digest())
    digest = digest.hexdigest()
    outputs = [os.path.join(stub_dir, s) for s in SONAMES]
    outputs += [os.path.join(site, HOOK_NAME), os.path.join(site, PTH_NAME)]

    def stamp_text() -> str:  # inputs digest + what is on disk now (catches deleted/damaged files)
        lines = [f"inputs {digest}"]
        for path in outputs:
            try:
                with open(path, "rb") as f:
                    lines.append(f"{hashlib.sha256(f.read()).hexdigest()} {path}")
            except OSError:
                lines.append(f"missing {path}")
        return "\n".join(lines) + "\n"

    try:
        with open(stamp_path) as f:
            up_to_date = f.read() == stamp_text()
    except OSError:
        up_to_date = False
    if up_to_date:
        byte_compile(os.path.join(site, HOOK_NAME))
        say(f"up to date ({len(symbols)} symbols, {stub_dir})")

    cxx = os.environ.get("CXX") or shutil.which("g++")
    if not cxx:
        say("g++ not found; install it (apt-get install g++) and re-run", 1)
    os.makedirs(stub_dir, exist_ok=True)
    if os.path.exists(stamp_path):
        os.remove(stamp_path)
    with tempfile.TemporaryDirectory(dir=stub_dir) as tmp:
        for soname in SONAMES:
            inc = os.path.join(tmp, soname + ".inc")
            with open(inc, "w") as f:
                f.write(sources[soname])
            out = os.path.join(tmp, soname)
            cmd = [cxx, "-std=c++17", "-O2", "-fPIC", "-shared", f'-DLABELLOOP_SYMBOLS="{inc}"',
                   f"-Wl,-soname,{soname}", "-Wl,--no-undefined", "-o", out, CPP]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                say(f"compiling {soname} failed:\n{' '.join(cmd)}\n{proc.stderr}", 1)
            os.replace(out, os.path.join(stub_dir, soname))
            shutil.copyfile(inc, os.path.join(stub_dir, soname + ".inc"))  # kept for inspection
    write_if_changed(os.path.join(site, HOOK_NAME), hook)
    byte_compile(os.path.join(site, HOOK_NAME))
    write_if_changed(os.path.join(site, PTH_NAME), PTH_TEXT.encode())

    env = dict(os.environ)
    env.pop("LABELLOOP_CUDA_STUBS", None)
    proc = subprocess.run([sys.executable, "-c", VERIFY], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        say(f"stubs built in {stub_dir} but torchvision still fails to load:\n{tail}", 1)
    with open(stamp_path, "w") as f:
        f.write(stamp_text())
    counts = ", ".join(f"{s} ({sources[s].count('LABELLOOP_STUB_')} symbol(s))" for s in SONAMES)
    say(f"built {counts} into {stub_dir} [{origin}], installed {PTH_NAME}; "
        f"torchvision ops verified ({time.monotonic() - t0:.1f}s)")


if __name__ == "__main__":
    main()
