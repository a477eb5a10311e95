// Instantiates the fwd selective scan kernels for __nv_bfloat16 inputs (one dtype per file keeps nvcc
// builds parallel and small).
#include "cuda/scan_fwd.cuh"

namespace wm::cuda::scan_detail {
template cudaError_t launch_fwd<__nv_bfloat16>(const ScanArgs &, bool, cudaStream_t);
}  // namespace wm::cuda::scan_detail
