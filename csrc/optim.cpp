// Multi-tensor optimizer pieces for training (C ABI in wavemamba.h): the global gradient norm and
// clipping, and the AdamW update, each over all parameters at once through ATen's foreach/fused
// kernels (a handful of launches per step instead of ~10 per parameter), and no host sync: the
// norm stays on the device, and a non-finite one makes the update skip itself there.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <optional>
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

int wm_clip_grad_norm(wm_tensor *grads_, int64_t n, double max_norm, wm_tensor *total) {
  return wm::shim::guard("clip_grad_norm", [&] {
    TORCH_CHECK(total != nullptr, "output pointer is NULL");
    const auto grads = tensors_of(grads_, n, "grads");
    TORCH_CHECK(!grads.empty(), "no gradients to clip");
    // One flat copy of every gradient (a few hundred KB; far less host time than the foreach
    // norm's per-tensor bookkeeping), its norm accumulated in float64; all on the device.
    std::vector<at::Tensor> flat;
    flat.reserve(grads.size());
    for (const auto &g : grads) flat.push_back(g.reshape({-1}));
    const at::Tensor norm = at::linalg_vector_norm(at::cat(flat), 2, std::nullopt, false, at::kDouble);
    if (max_norm > 0.0) {
      // coef = min(1, max_norm / (norm + 1e-6)), and 1 for a non-finite norm (left to the caller).
      at::NoGradGuard no_grad;
      const at::Tensor coef = (max_norm / (norm + 1e-6)).clamp_max(1.0);
      at::_foreach_mul_(grads, at::where(norm.isfinite(), coef, at::ones_like(coef)).to(at::kFloat));
    }
    *total = wm::shim::adopt(norm);
  });
}

int wm_adamw_step(wm_tensor *params_, wm_tensor *grads_, wm_tensor *m_, wm_tensor *v_, int64_t n,
                  double lr, double beta1, double beta2, double eps, double weight_decay,
                  int64_t step, wm_tensor skip_) {
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
    // The kernel skips the whole update when found_inf holds 1 (read on the device: no sync).
    std::optional<at::Tensor> found_inf;
    const at::Tensor skip = wm::shim::optional(skip_);
    if (skip.defined()) found_inf = skip.to(params[0].device(), at::kFloat);
    at::_fused_adamw_(params, grads, m, v, /*max_exp_avg_sqs=*/{}, steps, lr, beta1, beta2,
                      weight_decay, eps, /*amsgrad=*/false, /*maximize=*/false,
                      /*grad_scale=*/std::nullopt, found_inf);
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
