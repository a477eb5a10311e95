// libtorch's Kineto profiler behind the C ABI (wavemamba.h): CPU operators and, when CUPTI is
// available, every CUDA kernel with its device time, saved as a Chrome trace.
#include <torch/csrc/autograd/profiler_kineto.h>

#include <cstdlib>
#include <set>
#include <string>

#include "shim_common.h"

namespace {

using torch::profiler::impl::ActivityType;
using torch::profiler::impl::ProfilerConfig;
using torch::profiler::impl::ProfilerState;

std::set<ActivityType> activities(bool cuda) {
  std::set<ActivityType> a{ActivityType::CPU};
  if (cuda) a.insert(ActivityType::CUDA);
  return a;
}

}  // namespace

extern "C" {

int wm_profiler_start(int cuda) {
  return wm::shim::guard("profiler_start", [&] {
    TORCH_CHECK(!torch::autograd::profiler::isProfilerEnabledInMainThread(),
                "the profiler is already running");
    // A CPU-only trace: Kineto still probes for GPUs and logs "gpuGetDeviceCount failed with code
    // 35" as an ERROR on machines without one. Kineto reads its log level from the environment
    // when it first starts; an explicit KINETO_LOG_LEVEL is kept.
    if (cuda == 0) setenv("KINETO_LOG_LEVEL", "5", /*overwrite=*/0);
    const ProfilerConfig config(ProfilerState::KINETO);
    torch::autograd::profiler::prepareProfiler(config, activities(cuda != 0));
    torch::autograd::profiler::enableProfiler(config, activities(cuda != 0));
  });
}

int wm_profiler_stop(const char *path) {
  return wm::shim::guard("profiler_stop", [&] {
    TORCH_CHECK(path != nullptr, "trace path is NULL");
    auto result = torch::autograd::profiler::disableProfiler();
    TORCH_CHECK(result != nullptr, "the profiler was not running");
    result->save(path);
  });
}

}  // extern "C"
