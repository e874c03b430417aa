// Inter-block behaviour under the SIMT emulation, built with ThreadSanitizer by
// verification/test_cuda_emulation.py: blocks that hand data to each other through global
// memory and a progress flag (the pattern a multi-block wavefront needs), launched
// cooperatively (every block resident at once).
//
//   ./a.out handoff      block 0 writes a row, publishes it with a release store of a flag;
//                        block 1 waits for the flag with acquire loads, then reads the row.
//                        Exit 0 when block 1 read exactly what block 0 wrote.
//   ./a.out overcommit   the same kernel on more blocks than can be resident: the launch must
//                        be refused (exit 3), as cudaLaunchCooperativeKernel refuses.
//
// Planted fault: -DINVCONV_PLANT_RELAXED_FLAG publishes with a relaxed store: no
// happens-before from the writes to the reads, which ThreadSanitizer reports as a data race.

#include "simt_emulation.h"

#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "../cuda/device_atomic.cuh"

namespace ck = invconv_core::cuda_kernels;

__global__ void handoff(float* row, int* flags, float* seen, int n) {
  const unsigned b = blockIdx.x;
  if (b + 1 < gridDim.x) {  // a producer: its row, then its flag
    for (int i = threadIdx.x; i < n; i += blockDim.x) row[b * n + i] = 1.0f + b * n + i;
    __syncthreads();
    if (threadIdx.x == 0) {
#if defined(INVCONV_PLANT_RELAXED_FLAG)
      ck::DeviceAtomicRef<int>(flags[b]).store(1, ck::order::relaxed);
#else
      ck::DeviceAtomicRef<int>(flags[b]).store(1, ck::order::release);
#endif
    }
  }
  if (b > 0) {  // a consumer of the block before it
    if (threadIdx.x == 0)
      while (ck::DeviceAtomicRef<int>(flags[b - 1]).load(ck::order::acquire) == 0) std::this_thread::yield();
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) seen[b * n + i] = row[(b - 1) * n + i];
  }
}

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "handoff";
  const int n = 256, blocks = 2;
  invconv_simt::set_resident_blocks(2);
  const int grid = mode == "overcommit" ? 3 : blocks;
  std::vector<float> row(grid * n, 0.0f), seen(grid * n, 0.0f);
  std::vector<int> flags(grid, 0);
  try {
    invconv_simt::launch_cooperative(&handoff, dim3(grid), dim3(64), 0, row.data(), flags.data(),
                                     seen.data(), n);
  } catch (const std::invalid_argument& err) {
    std::printf("refused: %s\n", err.what());
    return 3;
  }
  for (int b = 1; b < grid; ++b)
    for (int i = 0; i < n; ++i)
      if (seen[b * n + i] != 1.0f + (b - 1) * n + i) {
        std::printf("block %d read %g at %d, block %d wrote %g\n", b, seen[b * n + i], i, b - 1,
                    1.0f + (b - 1) * n + i);
        return 1;
      }
  std::printf("ok: %d blocks handed their rows over\n", grid);
  return 0;
}
