// A CPU emulation of the CUDA thread model, enough to run block-synchronous kernels written
// for nvcc (cuda/wavefront_kernel.cuh) unchanged, for testing on machines without a GPU.
//
//  * every CUDA thread of a block is a std::thread; threadIdx / blockIdx / blockDim / gridDim
//    are thread_local, so the kernel reads them as on a GPU;
//  * __syncthreads() is a barrier over the block's threads (BlockBarrier: a mutex and a
//    condition variable of the block's own -- std::barrier of libstdc++ waits through a
//    process-wide pool, which ThreadSanitizer sees as synchronisation between unrelated blocks
//    and which hid races between them); a thread that returns from the kernel leaves the
//    barrier (arrive_and_drop), as an exited GPU thread no longer counts at a barrier;
//  * blocks run concurrently, resident_blocks() of them at a time (2 unless set; each with its
//    own shared memory), taken in a shuffled order: a kernel whose blocks race on global memory
//    gives wrong results or a ThreadSanitizer report; what inter-block code uses is shimmed
//    (atomicAdd, atomicCAS, __threadfence, and DeviceAtomic: cuda::atomic_ref on the GPU,
//    std::atomic_ref here, with the same memory orders), and a launch whose blocks wait on each
//    other (launch_cooperative) is refused unless all its blocks can be resident at once, as
//    cudaLaunchCooperativeKernel refuses;
//  * dynamic shared memory is one buffer per block of exactly the launch's byte count (no
//    slack: under AddressSanitizer a read or write one element past it is reported), 16-byte
//    aligned as CUDA's, filled with 0xFF bytes before the block starts: a NaN in float and
//    double, so reading a slot nobody wrote shows up in the result;
//  * a vector access checks its address as the GPU does (require_aligned: a float4 / double2
//    load needs 16 bytes) and aborts naming the kernel, the variable and the address, where the
//    GPU traps with "misaligned address";
//  * a launch CUDA would reject (too many threads, more than 48 KiB of dynamic shared memory
//    without the kernel's opt-in -- func_set_max_dynamic_shared, cudaFuncSetAttribute's
//    counterpart, itself refused above kMaxDynamicSharedOptin --, an empty grid) throws.
// The threads really run concurrently, so a missing barrier gives wrong results, and a build
// with -fsanitize=thread reports it as a data race (verification/test_cuda_emulation.py).
// Requires C++20 (std::atomic_ref).
#pragma once

#define INVCONV_SIMT_EMULATION 1

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <random>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>
#include <exception>

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

// The barrier of one block: the phase completes when every thread still in the kernel has
// arrived; a thread that leaves the kernel drops out (arrive_and_drop).
class BlockBarrier {
 public:
  explicit BlockBarrier(std::ptrdiff_t threads) : expected_(threads) {}

  void arrive_and_wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    const std::uint64_t phase = phase_;
    if (++arrived_ == expected_) {
      complete();
    } else {
      wake_.wait(lock, [&] { return phase_ != phase; });
    }
  }

  void arrive_and_drop() {
    const std::lock_guard<std::mutex> lock(mutex_);
    --expected_;
    if (expected_ > 0 && arrived_ == expected_) complete();
  }

 private:
  void complete() {
    arrived_ = 0;
    ++phase_;
    wake_.notify_all();
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::ptrdiff_t expected_, arrived_ = 0;
  std::uint64_t phase_ = 0;
};

inline thread_local BlockBarrier* block_barrier = nullptr;
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

// How many blocks run at once (set_resident_blocks; >= 2 so that blocks overlap), and the seed
// of the order they are taken in (each launch shuffles the grid's blocks).
inline std::atomic<int> resident = 2;
inline std::atomic<unsigned> order_seed = 1;

inline void set_resident_blocks(int n) {
  if (n < 1) throw std::invalid_argument("simt: resident blocks must be >= 1");
  resident = n;
}

template <typename... Params, typename... Args>
void run_grid(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t shared_bytes,
              int slots, bool cooperative, const Args&... args);

// Runs kernel<<<grid, block, shared_bytes>>>(args...) and returns when every block is done.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t shared_bytes,
            const Args&... args) {
  run_grid(kernel, grid, block, shared_bytes, resident.load(), false, args...);
}

// cudaLaunchCooperativeKernel's contract: the blocks may wait on each other, so every block
// must be resident at once; refused (std::invalid_argument) when the grid exceeds
// resident_blocks, as the GPU refuses a grid beyond its occupancy.
template <typename... Params, typename... Args>
void launch_cooperative(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t shared_bytes,
                        const Args&... args) {
  const unsigned long long n_blocks = 1ull * grid.x * grid.y * grid.z;
  if (n_blocks > static_cast<unsigned long long>(resident.load()))
    throw std::invalid_argument("simt cooperative launch: " + std::to_string(n_blocks) +
                                " blocks wait on each other but only " +
                                std::to_string(resident.load()) + " can be resident at once");
  run_grid(kernel, grid, block, shared_bytes, static_cast<int>(n_blocks), true, args...);
}

// The blocks of a grid, `slots` at a time: each worker takes the next block of a shuffled order
// when its block is done (a cooperative grid: every block its own worker, all at once).
template <typename... Params, typename... Args>
void run_grid(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t shared_bytes,
              int slots, bool cooperative, const Args&... args) {
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
  // the grid's blocks in a shuffled order, taken by `slots` workers, each with its own shared
  // memory of exactly shared_bytes (a zero-byte request still gets a valid, aligned pointer)
  std::vector<dim3> order;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) order.emplace_back(bx, by, bz);
  std::mt19937 shuffle(order_seed.fetch_add(1));
  std::shuffle(order.begin(), order.end(), shuffle);
  std::atomic<std::size_t> next = 0;
  std::mutex failure_mutex;
  std::exception_ptr failure;
  auto worker = [&](std::size_t own) {
    struct Free {
      void operator()(unsigned char* q) const { ::operator delete[](q, std::align_val_t(16)); }
    };
    const std::unique_ptr<unsigned char[], Free> shared_buffer(static_cast<unsigned char*>(
        ::operator new[](shared_bytes, std::align_val_t(16))));
    unsigned char* const shared_data = shared_buffer.get();
    for (std::size_t n = cooperative ? own : next++; n < order.size(); n = cooperative ? order.size() : next++) {
      const dim3 b = order[n];
      std::memset(shared_data, 0xFF, shared_bytes);
      BlockBarrier barrier(static_cast<std::ptrdiff_t>(n_threads));
      std::vector<std::thread> threads;
      threads.reserve(n_threads);
      for (unsigned tz = 0; tz < block.z; ++tz)
        for (unsigned ty = 0; ty < block.y; ++ty)
          for (unsigned tx = 0; tx < block.x; ++tx)
            threads.emplace_back([&, tx, ty, tz] {
              threadIdx = dim3(tx, ty, tz);
              blockIdx = b;
              blockDim = block;
              gridDim = grid;
              block_barrier = &barrier;
              block_shared = shared_data;
              kernel(args...);
              barrier.arrive_and_drop();
            });
      for (std::thread& t : threads) t.join();
    }
  };
  std::vector<std::thread> workers;
  const std::size_t n_workers = std::min<std::size_t>(static_cast<std::size_t>(slots < 1 ? 1 : slots),
                                                      order.size());
  for (std::size_t w = 0; w < n_workers; ++w)
    workers.emplace_back([&, w] {
      try {
        worker(w);
      } catch (...) {
        const std::lock_guard<std::mutex> lock(failure_mutex);
        failure = std::current_exception();
      }
    });
  for (std::thread& t : workers) t.join();
  if (failure) std::rethrow_exception(failure);
}

// A vector access of `bytes` at `p` (a float4, a double2): the GPU requires `bytes`-aligned
// addresses and traps otherwise; the emulation aborts with the same diagnosis.
inline void require_aligned(const void* p, std::size_t bytes, const char* where) {
  const auto address = reinterpret_cast<std::uintptr_t>(p);
  if (address % bytes != 0) {
    std::fprintf(stderr, "simt: misaligned address in %s: a %zu-byte vector access at %p, %zu "
                 "bytes past a %zu-byte boundary (block %u, thread %u)\n", where, bytes, p,
                 static_cast<std::size_t>(address % bytes), bytes, blockIdx.x, threadIdx.x);
    std::abort();
  }
}

}  // namespace invconv_simt

inline void __syncthreads() { invconv_simt::block_barrier->arrive_and_wait(); }

// What inter-block code uses. CUDA's atomicAdd / atomicCAS are relaxed read-modify-writes;
// __threadfence() orders a thread's memory accesses for the whole device (a seq_cst fence).
template <typename T>
inline T atomicAdd(T* address, T value) {
  return std::atomic_ref<T>(*address).fetch_add(value, std::memory_order_relaxed);
}

template <typename T>
inline T atomicCAS(T* address, T compare, T value) {
  std::atomic_ref<T>(*address).compare_exchange_strong(compare, value, std::memory_order_relaxed);
  return compare;  // the old value, as CUDA returns it
}

inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }

namespace invconv_core {
namespace cuda_kernels {
inline unsigned char* dynamic_shared_bytes() { return invconv_simt::block_shared; }
}  // namespace cuda_kernels
}  // namespace invconv_core
