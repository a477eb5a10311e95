// Instantiates the bwd selective scan kernels for __nv_bfloat16 inputs (one dtype per file keeps nvcc
// builds parallel and small).
#include "cuda/scan_bwd.cuh"

namespace wm::cuda::scan_detail {
template cudaError_t launch_bwd_local<__nv_bfloat16>(const ScanArgs &, cudaStream_t);
template cudaError_t launch_bwd<__nv_bfloat16>(const ScanArgs &, cudaStream_t);
}  // namespace wm::cuda::scan_detail
