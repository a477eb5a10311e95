// The C ABI of wavemamba.h: argument checks, dispatch to CPU/CUDA, and exception capture.
// Every entry point goes through `guard`, so no C++ exception crosses into Rust.
#include "wavemamba.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/Parallel.h>
#include <torch/version.h>

#include <cstring>
#include <string>

#include "mulaw.h"
#include "shim_common.h"
#include "scan/scan.h"

#ifdef WM_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <memory>

#include "cuda/kernels.h"
#endif

namespace {

using wm::shim::adopt;
using wm::shim::guard;
using wm::shim::lent;
using wm::shim::optional;

#ifdef WM_WITH_CUDA
/// A pair of CUDA events recorded on the current stream of one device.
struct CudaTimer {
  c10::DeviceIndex device = 0;
  cudaEvent_t start = nullptr, stop = nullptr;
  ~CudaTimer() {
    if (start) (void)cudaEventDestroy(start);
    if (stop) (void)cudaEventDestroy(stop);
  }
};

CudaTimer &timer_of(void *t) {
  TORCH_CHECK(t != nullptr, "timer is NULL");
  return *static_cast<CudaTimer *>(t);
}
#endif

[[maybe_unused]] void no_cuda() {
  TORCH_CHECK(false, "this build has no CUDA kernels (build with --features cuda)");
}

void check_mu(int64_t mu) {
  TORCH_CHECK(mu >= 1 && mu <= 65535, "mu must be in [1, 65535], got ", mu);
}

}  // namespace

extern "C" {

const char *wm_last_error(void) { return wm::shim::last_error.c_str(); }

const char *wm_kernels(void) {
#ifdef WM_WITH_CUDA
  return "cpu,cuda";
#else
  return "cpu";
#endif
}

const char *wm_torch_version(void) { return TORCH_VERSION; }

void wm_autocast_cuda_enter(int dtype, int *prev_enabled, int *prev_dtype) {
  *prev_enabled = at::autocast::is_autocast_enabled(at::kCUDA) ? 1 : 0;
  *prev_dtype = static_cast<int>(at::autocast::get_autocast_dtype(at::kCUDA));
  at::autocast::set_autocast_dtype(at::kCUDA, static_cast<at::ScalarType>(dtype));
  at::autocast::set_autocast_enabled(at::kCUDA, true);
  at::autocast::increment_nesting();
}

void wm_autocast_cuda_exit(int prev_enabled, int prev_dtype) {
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  at::autocast::set_autocast_enabled(at::kCUDA, prev_enabled != 0);
  at::autocast::set_autocast_dtype(at::kCUDA, static_cast<at::ScalarType>(prev_dtype));
}

void wm_autocast_cuda_state(int *enabled, int *dtype) {
  *enabled = at::autocast::is_autocast_enabled(at::kCUDA) ? 1 : 0;
  *dtype = static_cast<int>(at::autocast::get_autocast_dtype(at::kCUDA));
}

int wm_cuda_device_count(void) {
#ifdef WM_WITH_CUDA
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
#else
  return 0;
#endif
}

int wm_cuda_device_name(int index, char *buf, int64_t len) {
  return guard("cuda_device_name", [&] {
    TORCH_CHECK(buf != nullptr && len > 0, "empty output buffer");
#ifdef WM_WITH_CUDA
    cudaDeviceProp prop;
    C10_CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
    std::strncpy(buf, prop.name, static_cast<size_t>(len - 1));
    buf[len - 1] = '\0';
#else
    TORCH_CHECK(false, "this build has no CUDA kernels (build with --features cuda)");
#endif
  });
}

int wm_cuda_timer_new(int device, void **timer) {
  return guard("cuda_timer_new", [&] {
    TORCH_CHECK(timer != nullptr, "output pointer is NULL");
#ifdef WM_WITH_CUDA
    const c10::cuda::CUDAGuard device_guard(static_cast<c10::DeviceIndex>(device));
    auto t = std::make_unique<CudaTimer>();
    t->device = static_cast<c10::DeviceIndex>(device);
    C10_CUDA_CHECK(cudaEventCreate(&t->start));
    C10_CUDA_CHECK(cudaEventCreate(&t->stop));
    *timer = t.release();
#else
    (void)device;
    no_cuda();
#endif
  });
}

int wm_cuda_timer_start(void *timer) {
  return guard("cuda_timer_start", [&] {
#ifdef WM_WITH_CUDA
    CudaTimer &t = timer_of(timer);
    const c10::cuda::CUDAGuard device_guard(t.device);
    C10_CUDA_CHECK(cudaEventRecord(t.start, at::cuda::getCurrentCUDAStream(t.device)));
#else
    (void)timer;
    no_cuda();
#endif
  });
}

int wm_cuda_timer_stop(void *timer, double *ms) {
  return guard("cuda_timer_stop", [&] {
    TORCH_CHECK(ms != nullptr, "output pointer is NULL");
#ifdef WM_WITH_CUDA
    CudaTimer &t = timer_of(timer);
    const c10::cuda::CUDAGuard device_guard(t.device);
    C10_CUDA_CHECK(cudaEventRecord(t.stop, at::cuda::getCurrentCUDAStream(t.device)));
    C10_CUDA_CHECK(cudaEventSynchronize(t.stop));
    float elapsed = 0.f;
    C10_CUDA_CHECK(cudaEventElapsedTime(&elapsed, t.start, t.stop));
    *ms = elapsed;
#else
    (void)timer;
    no_cuda();
#endif
  });
}

void wm_cuda_timer_free(void *timer) {
#ifdef WM_WITH_CUDA
  delete static_cast<CudaTimer *>(timer);
#else
  (void)timer;
#endif
}

int wm_cuda_memory(int device, int reset_peak, int64_t *allocated, int64_t *peak) {
  return guard("cuda_memory", [&] {
    TORCH_CHECK(allocated != nullptr && peak != nullptr, "output pointers are NULL");
#ifdef WM_WITH_CUDA
    namespace alloc = c10::cuda::CUDACachingAllocator;
    const auto index = static_cast<c10::DeviceIndex>(device);
    const auto stats = alloc::getDeviceStats(index);
    const auto &bytes =
        stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)];
    *allocated = bytes.current;
    *peak = bytes.peak;
    if (reset_peak) alloc::resetPeakStats(index);
#else
    (void)device;
    (void)reset_peak;
    no_cuda();
#endif
  });
}

int wm_mulaw_encode(wm_tensor x_, int64_t mu, wm_tensor *out) {
  return guard("mulaw_encode", [&] {
    const at::Tensor &x = lent(x_, "x");
    check_mu(mu);
    TORCH_CHECK(at::isFloatingType(x.scalar_type()), "expected a floating-point tensor, got ",
                x.scalar_type());
    at::Tensor q = at::empty(x.sizes(), x.options().dtype(at::kLong));
    if (x.is_cuda()) {
#ifdef WM_WITH_CUDA
      const c10::cuda::CUDAGuard device_guard(x.device());
      const at::Tensor xf = x.to(at::kFloat).contiguous();
      C10_CUDA_CHECK(wm::cuda::mulaw_encode_f32(xf.data_ptr<float>(), q.data_ptr<int64_t>(),
                                                xf.numel(), static_cast<float>(mu),
                                                at::cuda::getCurrentCUDAStream()));
#else
      TORCH_CHECK(false, "tensor is on ", x.device(), " but this build has no CUDA kernels");
#endif
    } else {
      TORCH_CHECK(x.is_cpu(), "unsupported device ", x.device());
      const at::Tensor xd = x.to(at::kDouble).contiguous();
      const double *src = xd.data_ptr<double>();
      int64_t *dst = q.data_ptr<int64_t>();
      at::parallel_for(0, xd.numel(), 4096, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) dst[i] = wm::mulaw_encode_one<double>(src[i], mu);
      });
    }
    *out = adopt(std::move(q));
  });
}

int wm_mulaw_decode(wm_tensor q_, int64_t mu, wm_tensor *out) {
  return guard("mulaw_decode", [&] {
    const at::Tensor &q = lent(q_, "q");
    check_mu(mu);
    TORCH_CHECK(at::isIntegralType(q.scalar_type(), /*includeBool=*/false),
                "expected an integer tensor of tokens, got ", q.scalar_type());
    const at::Tensor ql = q.to(at::kLong).contiguous();
    at::Tensor x = at::empty(q.sizes(), q.options().dtype(at::kFloat));
    if (q.is_cuda()) {
#ifdef WM_WITH_CUDA
      const c10::cuda::CUDAGuard device_guard(q.device());
      C10_CUDA_CHECK(wm::cuda::mulaw_decode_f32(ql.data_ptr<int64_t>(), x.data_ptr<float>(),
                                                ql.numel(), static_cast<float>(mu),
                                                at::cuda::getCurrentCUDAStream()));
#else
      TORCH_CHECK(false, "tensor is on ", q.device(), " but this build has no CUDA kernels");
#endif
    } else {
      TORCH_CHECK(q.is_cpu(), "unsupported device ", q.device());
      const int64_t *src = ql.data_ptr<int64_t>();
      float *dst = x.data_ptr<float>();
      at::parallel_for(0, ql.numel(), 4096, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i)
          dst[i] = static_cast<float>(wm::mulaw_decode_one<double>(src[i], mu));
      });
    }
    *out = adopt(std::move(x));
  });
}

int wm_selective_scan(wm_tensor u, wm_tensor delta, wm_tensor A, wm_tensor Bm, wm_tensor Cm,
                      wm_tensor D_skip, wm_tensor z, wm_tensor delta_bias,
                      wm_tensor initial_state, int delta_softplus, wm_tensor *out,
                      wm_tensor *last_state) {
  return guard("selective_scan", [&] {
    TORCH_CHECK(out != nullptr && last_state != nullptr, "output pointers are NULL");
    auto result = wm::selective_scan(lent(u, "u"), lent(delta, "delta"), lent(A, "A"),
                                     lent(Bm, "B"), lent(Cm, "C"), optional(D_skip), optional(z),
                                     optional(delta_bias), optional(initial_state),
                                     delta_softplus != 0);
    *out = adopt(std::move(std::get<0>(result)));
    *last_state = adopt(std::move(std::get<1>(result)));
  });
}

}  // extern "C"
