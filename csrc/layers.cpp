// Fused CUDA layers as torch::autograd::Functions behind the C ABI (wavemamba.h): the Mamba
// block's causal depthwise conv1d + SiLU, and RMSNorm. The model uses them for CUDA tensors; on
// the CPU it keeps its ATen composites, which are also the references of tests/cuda_layers.rs.
#include <torch/csrc/autograd/custom_function.h>

#include "shim_common.h"

#ifdef WM_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda/layers.h"
#endif

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

#ifdef WM_WITH_CUDA

/// x (B, D, L) float32/bfloat16 with unit stride along L (any batch/channel strides, e.g. a slice
/// of in_proj's output); weight (D, 1, K); bias (D) or undefined. Outputs: y float32 (B, D, L),
/// and with `twin` the same values in bfloat16 (for autocast's next matmul, saving its cast).
class ConvSiluFunction : public torch::autograd::Function<ConvSiluFunction> {
 public:
  static variable_list forward(AutogradContext *ctx, const at::Tensor &x, const at::Tensor &weight,
                               const at::Tensor &bias, bool twin) {
    const c10::cuda::CUDAGuard guard(x.device());
    const at::Tensor xs = x.stride(2) == 1 ? x : x.contiguous();
    const at::Tensor w = weight.to(at::kFloat).reshape({x.size(1), -1}).contiguous();
    const at::Tensor b = bias.defined() ? bias.to(at::kFloat).contiguous() : at::Tensor();
    at::Tensor y = at::empty(x.sizes(), x.options().dtype(at::kFloat));
    at::Tensor y16 = twin ? at::empty(x.sizes(), x.options().dtype(at::kBFloat16)) : at::Tensor();
    C10_CUDA_CHECK(wm::cuda::conv_silu_fwd(
        xs.data_ptr(), xs.scalar_type() == at::kBFloat16, xs.stride(0), xs.stride(1),
        w.data_ptr<float>(), b.defined() ? b.data_ptr<float>() : nullptr, y.data_ptr<float>(),
        twin ? y16.data_ptr() : nullptr, x.size(0), x.size(1), x.size(2),
        static_cast<int>(w.size(1)), at::cuda::getCurrentCUDAStream()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    ctx->save_for_backward({xs, w, b});
    ctx->saved_data["weight_dtype"] = static_cast<int64_t>(weight.scalar_type());
    ctx->saved_data["has_bias"] = bias.defined();
    if (twin) return {y, y16};
    return {y};
  }

  static variable_list backward(AutogradContext *ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1], &b = saved[2];
    const c10::cuda::CUDAGuard guard(x.device());
    const int64_t batch = x.size(0), dim = x.size(1), len = x.size(2), width = w.size(1);
    const at::Tensor gy = grads[0].defined() ? grads[0].to(at::kFloat).contiguous()
                                             : at::zeros(x.sizes(), x.options().dtype(at::kFloat));
    const at::Tensor gy16 = grads.size() > 1 && grads[1].defined()
                                ? grads[1].to(at::kBFloat16).contiguous()
                                : at::Tensor();
    const int64_t tiles = (len + wm::cuda::kConvTile - 1) / wm::cuda::kConvTile;
    at::Tensor gx = at::empty(x.sizes(), x.options());
    at::Tensor part = at::empty({batch, dim, tiles, width + 1}, gy.options());
    C10_CUDA_CHECK(wm::cuda::conv_silu_bwd(
        x.data_ptr(), x.scalar_type() == at::kBFloat16, x.stride(0), x.stride(1),
        w.data_ptr<float>(), b.defined() ? b.data_ptr<float>() : nullptr, gy.data_ptr<float>(),
        gy16.defined() ? gy16.data_ptr() : nullptr, gx.data_ptr(), part.data_ptr<float>(), batch,
        dim, len, static_cast<int>(width), at::cuda::getCurrentCUDAStream()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const at::Tensor sums = part.sum(at::IntArrayRef{0, 2});  // (D, K + 1), fixed-order reduction
    const auto wdt = static_cast<at::ScalarType>(ctx->saved_data["weight_dtype"].toInt());
    at::Tensor gw = sums.narrow(1, 0, width).reshape({dim, 1, width}).to(wdt);
    at::Tensor gb = ctx->saved_data["has_bias"].toBool() ? sums.select(1, width).contiguous()
                                                         : at::Tensor();
    return {gx, gw, gb, at::Tensor()};
  }
};

/// x (…, C) float32, weight (C) float32. Output of x's shape in float32, or in bfloat16 with
/// `bf16_out` (what autocast's next matmul would cast it to anyway: the same values, one pass).
class RmsNormFunction : public torch::autograd::Function<RmsNormFunction> {
 public:
  static at::Tensor forward(AutogradContext *ctx, const at::Tensor &x, const at::Tensor &weight,
                            double eps, bool bf16_out) {
    const c10::cuda::CUDAGuard guard(x.device());
    const at::Tensor xc = x.to(at::kFloat).contiguous();
    const at::Tensor w = weight.to(at::kFloat).contiguous();
    const int64_t cols = x.size(-1), rows = xc.numel() / cols;
    at::Tensor y = at::empty_like(xc, xc.options().dtype(bf16_out ? at::kBFloat16 : at::kFloat));
    at::Tensor rstd = at::empty({rows}, xc.options());
    C10_CUDA_CHECK(wm::cuda::rms_norm_fwd(xc.data_ptr<float>(), w.data_ptr<float>(), y.data_ptr(),
                                          bf16_out, rstd.data_ptr<float>(), rows, cols,
                                          static_cast<float>(eps),
                                          at::cuda::getCurrentCUDAStream()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    ctx->save_for_backward({xc, w, rstd});
    ctx->saved_data["x_dtype"] = static_cast<int64_t>(x.scalar_type());
    return y;
  }

  static variable_list backward(AutogradContext *ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1], &rstd = saved[2];
    const c10::cuda::CUDAGuard guard(x.device());
    const at::Tensor gy = grads[0].to(at::kFloat).contiguous();
    const int64_t cols = x.size(-1), rows = x.numel() / cols;
    at::Tensor gx = at::empty_like(x);
    at::Tensor part = at::empty({wm::cuda::rms_norm_bwd_blocks(rows), cols}, x.options());
    C10_CUDA_CHECK(wm::cuda::rms_norm_bwd(x.data_ptr<float>(), w.data_ptr<float>(),
                                          rstd.data_ptr<float>(), gy.data_ptr<float>(),
                                          gx.data_ptr<float>(), part.data_ptr<float>(), rows,
                                          cols, at::cuda::getCurrentCUDAStream()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const auto xdt = static_cast<at::ScalarType>(ctx->saved_data["x_dtype"].toInt());
    return {gx.to(xdt), part.sum(0), at::Tensor(), at::Tensor()};
  }
};

#endif

void check_cuda_float(const at::Tensor &t, const char *name, bool allow_bf16) {
  TORCH_CHECK(t.is_cuda(), "argument `", name, "` must be a CUDA tensor (the CPU keeps ATen's ops)");
  const auto st = t.scalar_type();
  TORCH_CHECK(st == at::kFloat || (allow_bf16 && st == at::kBFloat16), "argument `", name,
              "` must be float32", allow_bf16 ? " or bfloat16" : "", ", got ", st);
}

}  // namespace

extern "C" {

int wm_causal_conv1d_silu(wm_tensor x_, wm_tensor weight_, wm_tensor bias_, wm_tensor *out,
                          wm_tensor *out_bf16) {
  return wm::shim::guard("causal_conv1d_silu", [&] {
    TORCH_CHECK(out != nullptr, "output pointer is NULL");
    const at::Tensor &x = wm::shim::lent(x_, "x");
    const at::Tensor &weight = wm::shim::lent(weight_, "weight");
    const at::Tensor bias = wm::shim::optional(bias_);
    TORCH_CHECK(x.dim() == 3 && x.numel() > 0, "argument `x` must be a non-empty (batch, dim, len), got ",
                x.sizes());
    TORCH_CHECK(weight.dim() == 3 && weight.size(0) == x.size(1) && weight.size(1) == 1 &&
                    weight.size(2) >= 1 && weight.size(2) <= 8,
                "argument `weight` must be (", x.size(1), ", 1, K) with 1 ≤ K ≤ 8, got ",
                weight.sizes());
    TORCH_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == x.size(1)),
                "argument `bias` must be (", x.size(1), ")");
    check_cuda_float(x, "x", true);
    check_cuda_float(weight, "weight", false);
    if (bias.defined()) check_cuda_float(bias, "bias", false);
#ifdef WM_WITH_CUDA
    auto outs = ConvSiluFunction::apply(x, weight, bias, out_bf16 != nullptr);
    if (out_bf16 != nullptr) *out_bf16 = wm::shim::adopt(outs[1]);
    *out = wm::shim::adopt(outs[0]);
#else
    TORCH_CHECK(false, "this build has no CUDA kernels (build with --features cuda)");
#endif
  });
}

int wm_rms_norm(wm_tensor x_, wm_tensor weight_, double eps, int bf16_out, wm_tensor *out) {
  return wm::shim::guard("rms_norm", [&] {
    TORCH_CHECK(out != nullptr, "output pointer is NULL");
    const at::Tensor &x = wm::shim::lent(x_, "x");
    const at::Tensor &weight = wm::shim::lent(weight_, "weight");
    TORCH_CHECK(x.dim() >= 1 && x.numel() > 0, "argument `x` is empty");
    TORCH_CHECK(weight.dim() == 1 && weight.size(0) == x.size(-1) && x.size(-1) <= 1024,
                "argument `weight` must be (", x.size(-1), ") with at most 1024 channels, got ",
                weight.sizes());
    check_cuda_float(x, "x", false);
    check_cuda_float(weight, "weight", false);
#ifdef WM_WITH_CUDA
    *out = wm::shim::adopt(RmsNormFunction::apply(x, weight, eps, bf16_out != 0));
#else
    (void)eps;
    (void)bf16_out;
    TORCH_CHECK(false, "this build has no CUDA kernels (build with --features cuda)");
#endif
  });
}

}  // extern "C"
