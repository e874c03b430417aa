// Test-only build of the CPU kernel for the race check of its pipelined row schedule
// (verification/test_cpu_pipeline_race.py): the producer of each row publishes every column and
// stalls after each publish (INVCONV_TEST_STALLED_PUBLISH_US), so a consumer that read columns
// the row above has not yet published would read them unsolved -- deterministically, whatever
// the machine (unless a loaded machine delays the consumer by more than the stall: the planted
// test retries, verification/test_cpu_pipeline_race.py). Registered as
// torch.ops.invconv_race_check.inv_conv2d. Never part of the package (setup.py builds cpp/*.cpp
// and cpp/cpu/*.cpp only).
#define INVCONV_TEST_STALLED_PUBLISH_US 200
#define INVCONV_TEST_LIBRARY invconv_race_check
#include "../cpu/wavefront_solve_cpu.cpp"
