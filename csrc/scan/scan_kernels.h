// Declarations of the two builds of the CPU scan kernels (see scan_kernel.inc).
#pragma once

#include "scan/scan_params.h"

namespace wm::scan {
#define WM_DECLARE_SCAN_KERNELS(NS)                                        \
  namespace NS {                                                           \
  template <typename T>                                                    \
  void fwd_rows(const FwdParams<T> &p, int64_t r0, int64_t r1);            \
  template <typename T>                                                    \
  void bwd_rows(const BwdParams<T> &q, int64_t r0, int64_t r1);            \
  template <> void fwd_rows<float>(const FwdParams<float> &, int64_t, int64_t);   \
  template <> void fwd_rows<double>(const FwdParams<double> &, int64_t, int64_t); \
  template <> void bwd_rows<float>(const BwdParams<float> &, int64_t, int64_t);   \
  template <> void bwd_rows<double>(const BwdParams<double> &, int64_t, int64_t); \
  }
WM_DECLARE_SCAN_KERNELS(avx2)
WM_DECLARE_SCAN_KERNELS(generic)
#undef WM_DECLARE_SCAN_KERNELS
}  // namespace wm::scan
