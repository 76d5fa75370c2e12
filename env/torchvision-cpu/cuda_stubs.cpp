// Stub CUDA libraries for running PyPI's CUDA build of torchvision on the CPU-only torch wheel.
//
// torchvision/_C.so from PyPI is linked against libc10_cuda.so and libtorch_cuda.so, which the
// CPU torch wheel does not ship, so `import torchvision` fails ("operator torchvision::nms does
// not exist").  install.py compiles this file twice (once per soname) into the venv; the start-up
// hook labelloop_cuda_stubs.py preloads the results with RTLD_GLOBAL so that _C.so can be loaded.
// CUDA kernels are never dispatched on CPU tensors, so these functions are only reached if
// somebody asks for CUDA explicitly; they then raise a clear C++ exception (which torch turns
// into a Python RuntimeError).
//
// The symbol list is not written here: install.py derives it from the installed _C.so
// (readelf --dyn-syms) and writes it as a list of LABELLOOP_STUB_* lines into the file named by
// LABELLOOP_SYMBOLS (one file per stub library).  The definitions use C linkage so that their
// names are exactly the mangled C++ names _C.so asks for; the dynamic linker only matches names.

#include <stdexcept>

#define LABELLOOP_EXPORT extern "C" __attribute__((visibility("default")))

namespace {
[[noreturn]] __attribute__((noinline)) void labelloop_cuda_unavailable() {
    throw std::runtime_error("labelloop CPU environment: CUDA is not available");
}
}  // namespace

// A function that must not be reached on a CPU-only machine: throws std::runtime_error.
#define LABELLOOP_STUB_THROW(sym) \
    LABELLOOP_EXPORT void sym() { labelloop_cuda_unavailable(); }

// A query that has a sensible CPU answer: zero (used for c10::cuda::device_count -> 0 devices).
#define LABELLOOP_STUB_ZERO(sym) \
    LABELLOOP_EXPORT long sym() { return 0; }

// A variable (e.g. c10::cuda::CUDACachingAllocator::allocator, a std::atomic<CUDAAllocator*>):
// a zero-initialised, pointer-sized and pointer-aligned object.
#define LABELLOOP_STUB_OBJECT(sym) \
    extern "C" {                                                        \
    __attribute__((visibility("default"), aligned(16))) void* sym = nullptr; \
    }

#ifndef LABELLOOP_SYMBOLS
#error "compile with -DLABELLOOP_SYMBOLS='\"file.inc\"' (install.py does this)"
#endif
#include LABELLOOP_SYMBOLS
