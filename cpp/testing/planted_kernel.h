// Test-only: the planted counter-examples of the CUDA kernel's checks, each a policy that
// replaces one choice of KernelPolicy (cuda/wavefront_kernel.cuh) with the defect a check must
// catch. wavefront_kernel.cuh includes this file only when compiled with
// -DINVCONV_PLANTED_KERNEL=<one of the names below>; the package never is.
//
//   PlantedMissingDiagonalBarrier  no barrier between anti-diagonals: ThreadSanitizer reports a
//                                  data race (test_cuda_emulation.py)
//   PlantedShortRing               shared memory for one ring diagonal fewer than the kernel
//                                  uses: AddressSanitizer reports the overrun (same)
//   PlantedRuntimePointerChoice    shared or global chosen at run time: generic loads in the
//                                  SASS (test_sass_profile.py)
//   PlantedWideIndex               64-bit offsets and counters on every path: 64-bit integer
//                                  arithmetic in the dot product (same)
//   PlantedOneFmaPerLoad           the dot product a channel at a time: two loads per FMA (same)
//   PlantedMissingReductionBarrier (bands) no barrier between a pair's threads leaving their
//                                  partial sums and their addition: ThreadSanitizer reports a
//                                  data race (test_cuda_emulation.py)
//   PlantedRelaxedProgress         (bands) a band's progress published with a relaxed store:
//                                  nothing orders its halo rows before the flag, ThreadSanitizer
//                                  reports the race between blocks (same)
//   PlantedBandByBlockIndex        (bands) band = blockIdx.x instead of a ticket: a block can wait
//                                  on a band no running block holds -- the emulation's two
//                                  resident blocks in shuffled order deadlock (same)
//
// Included by wavefront_kernel.cuh inside namespace invconv_core::cuda_kernels, after
// KernelPolicy.
#pragma once

struct PlantedMissingDiagonalBarrier : KernelPolicy {
  __device__ __forceinline__ static void diagonal_barrier() {}
};

struct PlantedShortRing : KernelPolicy {
  static constexpr std::int64_t ring_diagonals(std::int64_t kh, std::int64_t kw) { return kh + kw - 2; }
};

struct PlantedRuntimePointerChoice : KernelPolicy {
  template <typename scalar_t, typename acc_t>
  __device__ __forceinline__ static bool in_shared(bool in_shared, const SolveParams<scalar_t, acc_t>& p) {
    return in_shared ? (p.B >= 0) : (p.B < 0);  // the same value, known only at run time
  }
};

struct PlantedWideIndex : KernelPolicy {
  template <typename index_t>
  using Offset = std::int64_t;
  using Counter = std::int64_t;
};

struct PlantedOneFmaPerLoad : KernelPolicy {
  template <typename acc_t, typename J>
  __device__ __forceinline__ static void tap_dot(acc_t (&acc)[kChannelsPerThread], const acc_t* t,
                                                 const acc_t* xn, J Ci) {
    for (int l = 0; l < kChannelsPerThread; ++l)
#pragma unroll 1
      for (J c2 = 0; c2 < Ci; ++c2) acc[l] += t[c2 * kChannelsPerThread + l] * xn[c2];
  }
};

struct PlantedMissingReductionBarrier : KernelPolicy {
  __device__ __forceinline__ static void reduction_barrier() {}
};

struct PlantedRelaxedProgress : KernelPolicy {
  __device__ __forceinline__ static void publish_progress(int* flag, int value) {
    DeviceAtomicRef<int>(*flag).store(value, order::relaxed);
  }
};

struct PlantedBandByBlockIndex : KernelPolicy {
  __device__ __forceinline__ static int take_band(int*, unsigned taken_before) {
    return static_cast<int>(blockIdx.x + taken_before * gridDim.x);
  }
};

using ActivePolicy = INVCONV_PLANTED_KERNEL;
