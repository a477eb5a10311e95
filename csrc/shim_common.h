// What every C ABI translation unit shares: exception capture into the thread's last error, and
// tensor handles in and out (conventions in wavemamba.h).
#pragma once

#include <c10/util/Exception.h>
#include <ATen/core/Tensor.h>

#include <exception>
#include <string>

#include "wavemamba.h"

namespace wm::shim {

/// Message of the last failed call on this thread (read by `wm_last_error`).
inline thread_local std::string last_error;

/// Runs `body`, turning any exception into a non-zero status and `last_error`.
template <typename F>
int guard(const char *op, F &&body) {
  try {
    body();
    last_error.clear();
    return 0;
  } catch (const c10::Error &e) {
    last_error = std::string(op) + ": " + e.what_without_backtrace();
  } catch (const std::exception &e) {
    last_error = std::string(op) + ": " + e.what();
  } catch (...) {
    last_error = std::string(op) + ": unknown C++ exception";
  }
  return 1;
}

/// A lent input tensor (never freed here).
inline const at::Tensor &lent(wm_tensor t, const char *name) {
  TORCH_CHECK(t != nullptr, "argument `", name, "` is NULL");
  return *static_cast<at::Tensor *>(t);
}

/// An optional lent input: undefined when NULL.
inline at::Tensor optional(wm_tensor t) {
  return t ? *static_cast<at::Tensor *>(t) : at::Tensor();
}

/// A new handle the caller adopts.
inline wm_tensor adopt(at::Tensor t) { return new at::Tensor(std::move(t)); }

}  // namespace wm::shim
