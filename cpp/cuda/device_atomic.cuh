// Acquire/release atomics between the blocks of a grid, written once for both compilers:
// cuda::atomic_ref at device scope under nvcc, std::atomic_ref under the SIMT emulation
// (emulation/simt_emulation.h), with the same memory orders, so that ThreadSanitizer judges the
// happens-before between emulated blocks that the GPU's memory model gives the real ones.
// The banded solve (wavefront_kernel.cuh, kImageBand) publishes and polls its per-band progress
// flags with it; emulation/interblock_check.cpp tests the bare pattern and its planted faults.
#pragma once

#if defined(__CUDACC__)
#include <cuda/atomic>
#elif defined(INVCONV_SIMT_EMULATION)
#include <atomic>
#include <thread>
#else
#error "device_atomic.cuh: compile with nvcc, or include emulation/simt_emulation.h first"
#endif

namespace invconv_core {
namespace cuda_kernels {

#if defined(__CUDACC__)
template <typename T>
using DeviceAtomicRef = cuda::atomic_ref<T, cuda::thread_scope_device>;
namespace order {
constexpr cuda::memory_order relaxed = cuda::memory_order_relaxed;
constexpr cuda::memory_order acquire = cuda::memory_order_acquire;
constexpr cuda::memory_order release = cuda::memory_order_release;
}  // namespace order
#else
template <typename T>
using DeviceAtomicRef = std::atomic_ref<T>;
namespace order {
constexpr std::memory_order relaxed = std::memory_order_relaxed;
constexpr std::memory_order acquire = std::memory_order_acquire;
constexpr std::memory_order release = std::memory_order_release;
}  // namespace order
#endif

// Between two polls of a flag another block will set: a short sleep on the GPU (sm_70+), a
// yield under the emulation (its blocks are std::threads).
__device__ __forceinline__ void spin_pause() {
#if defined(__CUDACC__)
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 700
  __nanosleep(32);
#endif
#else
  std::this_thread::yield();
#endif
}

}  // namespace cuda_kernels
}  // namespace invconv_core
