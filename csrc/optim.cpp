// Multi-tensor optimizer pieces for training (C ABI in wavemamba.h): the global gradient norm and
// clipping, and the AdamW update, each over all parameters at once through ATen's foreach/fused
// kernels (a handful of launches per step instead of ~10 per parameter, and one host sync).
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <vector>

#include "shim_common.h"

namespace {

std::vector<at::Tensor> tensors_of(const wm_tensor *ts, int64_t n, const char *name) {
  TORCH_CHECK(n >= 0, "negative tensor count");
  TORCH_CHECK(n == 0 || ts != nullptr, "`", name, "` is NULL");
  std::vector<at::Tensor> out;
  out.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out.push_back(wm::shim::lent(ts[i], name));
  return out;
}

}  // namespace

extern "C" {

int wm_clip_grad_norm(wm_tensor *grads_, int64_t n, double max_norm, double *total) {
  return wm::shim::guard("clip_grad_norm", [&] {
    TORCH_CHECK(total != nullptr, "output pointer is NULL");
    const auto grads = tensors_of(grads_, n, "grads");
    if (grads.empty()) {
      *total = 0.0;
      return;
    }
    // Per-tensor norms in float32 (foreach kernel), combined in float64.
    const auto norms = at::_foreach_norm(grads, 2, at::kFloat);
    const at::Tensor sum_sq = at::stack(norms).to(at::kDouble).square().sum();
    const double norm = std::sqrt(sum_sq.item<double>());
    *total = norm;
    if (max_norm > 0.0 && norm > max_norm) {
      at::NoGradGuard no_grad;
      at::_foreach_mul_(grads, at::Scalar(max_norm / (norm + 1e-6)));
    }
  });
}

int wm_adamw_step(wm_tensor *params_, wm_tensor *grads_, wm_tensor *m_, wm_tensor *v_, int64_t n,
                  double lr, double beta1, double beta2, double eps, double weight_decay,
                  int64_t step) {
  return wm::shim::guard("adamw_step", [&] {
    TORCH_CHECK(step >= 1, "step must be ≥ 1, got ", step);
    const auto params = tensors_of(params_, n, "params");
    const auto grads = tensors_of(grads_, n, "grads");
    const auto m = tensors_of(m_, n, "m");
    const auto v = tensors_of(v_, n, "v");
    if (params.empty()) return;
    for (int64_t i = 0; i < n; ++i) {
      const auto k = static_cast<size_t>(i);
      TORCH_CHECK(params[k].device() == params[0].device(), "parameters on several devices");
      TORCH_CHECK(params[k].scalar_type() == at::kFloat && grads[k].scalar_type() == at::kFloat &&
                      m[k].scalar_type() == at::kFloat && v[k].scalar_type() == at::kFloat,
                  "AdamW expects float32 parameters, gradients and moments");
      TORCH_CHECK(grads[k].sizes() == params[k].sizes() && m[k].sizes() == params[k].sizes() &&
                      v[k].sizes() == params[k].sizes(),
                  "parameter ", i, ": gradient or moment shape differs from the parameter's");
    }
    at::NoGradGuard no_grad;
    // The fused kernel reads the (already incremented) step count from a float32 tensor per
    // parameter on the parameters' device; one shared scalar serves them all.
    const at::Tensor t = at::full({}, static_cast<double>(step),
                                  params[0].options().dtype(at::kFloat));
    const std::vector<at::Tensor> steps(params.size(), t);
    at::_fused_adamw_(params, grads, m, v, /*max_exp_avg_sqs=*/{}, steps, lr, beta1, beta2,
                      weight_decay, eps, /*amsgrad=*/false, /*maximize=*/false);
  });
}

int wm_zero_(wm_tensor *ts_, int64_t n) {
  return wm::shim::guard("zero_", [&] {
    const auto ts = tensors_of(ts_, n, "tensors");
    if (ts.empty()) return;
    at::NoGradGuard no_grad;
    at::_foreach_zero_(ts);
  });
}

}  // extern "C"
