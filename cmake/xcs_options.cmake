# SPDX-License-Identifier: MIT
# Build settings for the project's own targets: warnings, -Werror and sanitizers.
#
# Everything lives in xcs_set_target_options() so that one call per target is the
# whole story, as marl_set_target_options() is for marl. Warnings are PRIVATE and so
# never reach a user of xcs::xcs.

set(XCS_SANITIZE "" CACHE STRING "Sanitizer build: empty, 'address' (ASan+UBSan) or 'thread' (TSan)")
set_property(CACHE XCS_SANITIZE PROPERTY STRINGS "" address thread)
if(NOT XCS_SANITIZE MATCHES "^(|address|thread)$")
  message(FATAL_ERROR "XCS_SANITIZE must be empty, 'address' or 'thread', not '${XCS_SANITIZE}'")
endif()

# -Werror by default only in CI (CI=true or any non-empty value but 'false'), so a
# newer compiler's new warning does not break a user's or developer's build.
set(xcs_werror_default OFF)
if(DEFINED ENV{CI} AND NOT "$ENV{CI}" STREQUAL "" AND NOT "$ENV{CI}" STREQUAL "false")
  set(xcs_werror_default ON)
endif()
option(XCS_WERROR "Treat warnings as errors in the project's own targets" ${xcs_werror_default})

# xcs builds on Linux with GCC or Clang only (it reads /proc, calls gettid, demangles with
# <cxxabi.h> and uses GCC/Clang builtins), so the flags are theirs.
set(XCS_WARNING_FLAGS -Wall -Wextra -Wpedantic)
if(XCS_WERROR)
  list(APPEND XCS_WARNING_FLAGS -Werror)
endif()
# GCC's -Wmaybe-uninitialized misfires on sanitizer-instrumented optimized code (at -O1 it
# flags std::function inside <regex>); sanitizer builds are run to find errors, not warnings.
if(XCS_SANITIZE AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  list(APPEND XCS_WARNING_FLAGS -Wno-maybe-uninitialized)
endif()

if(XCS_SANITIZE STREQUAL "address")
  set(XCS_SANITIZER_FLAGS
      -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  set(XCS_SANITIZER_DEFINITIONS XCS_SANITIZE_ADDRESS=1)
elseif(XCS_SANITIZE STREQUAL "thread")
  set(XCS_SANITIZER_FLAGS -fsanitize=thread)
  set(XCS_SANITIZER_DEFINITIONS XCS_SANITIZE_THREAD=1)
else()
  set(XCS_SANITIZER_FLAGS "")
  set(XCS_SANITIZER_DEFINITIONS "")
endif()

# xcs_set_target_options(<target>)
#   Warnings (and -Werror when XCS_WERROR) PRIVATE to <target>. Sanitizer flags for
#   compile and link. On a library they are PUBLIC: every binary that links an
#   instrumented xcs must itself be built and linked with the same sanitizer, so the
#   tests, examples and any subproject get it without asking; an installed
#   sanitizer build hands the flags on to its users for the same reason.
function(xcs_set_target_options target)
  target_compile_options(${target} PRIVATE ${XCS_WARNING_FLAGS})
  if(NOT XCS_SANITIZE)
    return()
  endif()
  get_target_property(type ${target} TYPE)
  if(type MATCHES "LIBRARY$")
    set(scope PUBLIC)
  else()
    set(scope PRIVATE)
  endif()
  target_compile_options(${target} ${scope} ${XCS_SANITIZER_FLAGS})
  target_link_options(${target} ${scope} ${XCS_SANITIZER_FLAGS})
  target_compile_definitions(${target} ${scope} ${XCS_SANITIZER_DEFINITIONS})
endfunction()
