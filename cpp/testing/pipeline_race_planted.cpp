// The same test-only build with a planted bug (INVCONV_PLANT_READ_AHEAD): a consumer solves one
// column past what the row above has published. The race check must catch it
// (verification/test_cpu_pipeline_race.py). Registered as torch.ops.invconv_race_planted.inv_conv2d.
#define INVCONV_TEST_STALLED_PUBLISH_US 200
#define INVCONV_PLANT_READ_AHEAD
#define INVCONV_TEST_LIBRARY invconv_race_planted
#include "../cpu/wavefront_solve_cpu.cpp"
