// Instantiates the bwd selective scan kernels for float inputs (one dtype per file keeps nvcc
// builds parallel and small).
#include "cuda/scan_bwd.cuh"

namespace wm::cuda::scan_detail {
template cudaError_t launch_bwd_local<float>(const ScanArgs &, cudaStream_t);
template cudaError_t launch_bwd<float>(const ScanArgs &, cudaStream_t);
}  // namespace wm::cuda::scan_detail
