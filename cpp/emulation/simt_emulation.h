// A CPU emulation of the CUDA thread model, enough to run block-synchronous kernels written
// for nvcc (cuda/wavefront_kernel.cuh) unchanged, for testing on machines without a GPU.
//
//  * every CUDA thread of a block is a std::thread; threadIdx / blockIdx / blockDim / gridDim
//    are thread_local, so the kernel reads them as on a GPU;
//  * __syncthreads() is a std::barrier over the block's threads; a thread that returns from
//    the kernel leaves the barrier (arrive_and_drop), as an exited GPU thread no longer
//    counts at a barrier;
//  * blocks run one after another, a legal CUDA schedule (blocks may not wait on each other);
//  * dynamic shared memory is one buffer per block, filled with 0xFF bytes before the block
//    starts: a NaN in float and double, so reading a slot nobody wrote shows up in the result;
//  * a launch CUDA would reject (too many threads, more than 48 KiB of dynamic shared memory
//    without the kernel's opt-in -- func_set_max_dynamic_shared, cudaFuncSetAttribute's
//    counterpart, itself refused above kMaxDynamicSharedOptin --, an empty grid) throws.
// The threads really run concurrently, so a missing barrier gives wrong results, and a build
// with -fsanitize=thread reports it as a data race (verification/test_cuda_emulation.py).
// Requires C++20 (std::barrier).
#pragma once

#define INVCONV_SIMT_EMULATION 1

#include <barrier>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace invconv_simt {

inline thread_local std::barrier<>* block_barrier = nullptr;
inline thread_local unsigned char* block_shared = nullptr;

// CUDA's limits for one block: threads, and dynamic shared memory without an opt-in, and the
// most a kernel may opt in to (sm_90's 227 KiB).
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr std::size_t kMaxDynamicShared = 48 * 1024;
constexpr std::size_t kMaxDynamicSharedOptin = 227 * 1024;

// cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes)
inline std::mutex opt_in_mutex;
inline std::map<const void*, std::size_t> opt_in_bytes;

template <typename... Params>
void func_set_max_dynamic_shared(void (*kernel)(Params...), std::size_t bytes) {
  if (bytes > kMaxDynamicSharedOptin)
    throw std::invalid_argument("simt: opt-in to " + std::to_string(bytes) +
                                " bytes of dynamic shared memory (the device allows 227 KiB)");
  const std::lock_guard<std::mutex> lock(opt_in_mutex);
  opt_in_bytes[reinterpret_cast<const void*>(kernel)] = bytes;
}

template <typename... Params>
std::size_t max_dynamic_shared(void (*kernel)(Params...)) {
  const std::lock_guard<std::mutex> lock(opt_in_mutex);
  const auto it = opt_in_bytes.find(reinterpret_cast<const void*>(kernel));
  return it == opt_in_bytes.end() || it->second < kMaxDynamicShared ? kMaxDynamicShared : it->second;
}

// Runs kernel<<<grid, block, shared_bytes>>>(args...) and returns when every block is done.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t shared_bytes,
            const Args&... args) {
  const unsigned long long n_blocks = 1ull * grid.x * grid.y * grid.z;
  const unsigned n_threads = block.x * block.y * block.z;
  if (n_blocks == 0 || n_threads == 0)
    throw std::invalid_argument("simt launch: empty grid or block (CUDA: invalid configuration)");
  if (n_threads > kMaxThreadsPerBlock)
    throw std::invalid_argument("simt launch: " + std::to_string(n_threads) +
                                " threads per block (CUDA allows at most 1024)");
  if (shared_bytes > max_dynamic_shared(kernel))
    throw std::invalid_argument("simt launch: " + std::to_string(shared_bytes) +
                                " bytes of dynamic shared memory (48 KiB without an opt-in, "
                                "here " + std::to_string(max_dynamic_shared(kernel)) + ")");
  // +16: a zero-byte request still gets a valid, aligned pointer
  std::vector<unsigned char> shared(shared_bytes + 16);
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        std::memset(shared.data(), 0xFF, shared.size());
        std::barrier<> barrier(static_cast<std::ptrdiff_t>(n_threads));
        std::vector<std::thread> threads;
        threads.reserve(n_threads);
        for (unsigned tz = 0; tz < block.z; ++tz)
          for (unsigned ty = 0; ty < block.y; ++ty)
            for (unsigned tx = 0; tx < block.x; ++tx)
              threads.emplace_back([&, tx, ty, tz, bx, by, bz] {
                threadIdx = dim3(tx, ty, tz);
                blockIdx = dim3(bx, by, bz);
                blockDim = block;
                gridDim = grid;
                block_barrier = &barrier;
                block_shared = shared.data();
                kernel(args...);
                barrier.arrive_and_drop();
              });
        for (std::thread& t : threads) t.join();
      }
}

}  // namespace invconv_simt

inline void __syncthreads() { invconv_simt::block_barrier->arrive_and_wait(); }

namespace invconv_core {
namespace cuda_kernels {
inline unsigned char* dynamic_shared_bytes() { return invconv_simt::block_shared; }
}  // namespace cuda_kernels
}  // namespace invconv_core
