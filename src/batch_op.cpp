// SPDX-License-Identifier: MIT
// Batch ops: the errors of a batch that cannot be handed out.
#include <fmt/format.h>

#include "xcs/detail/batch_send.hpp"
#include "xcs/detail/op_runtime.hpp"
#include "xcs/error.hpp"

namespace xcs::detail {
namespace {

template <class... A>
std::exception_ptr make_error(fmt::format_string<A...> f, A&&... a) noexcept {
  try {
    return std::make_exception_ptr(error(fmt::format(f, std::forward<A>(a)...)));
  } catch (...) {
    return std::current_exception();  // std::bad_alloc
  }
}

}  // namespace

std::exception_ptr batch_size_error(const op_runtime& op, std::size_t got,
                                    std::size_t sent) noexcept {
  return make_error("xcs: batch op '{}': the batch function returned {} results for {} inputs",
                    op.name, got, sent);
}

std::exception_ptr batch_not_gathered(const op_runtime& op) noexcept {
  return make_error("xcs: batch op '{}': a call was started outside a batch", op.name);
}

}  // namespace xcs::detail
