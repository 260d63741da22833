# SPDX-License-Identifier: MIT
# Compiles SOURCE, which must fail with the message its first line names ("// expect: ..."),
# in at most MAX_ERRORS "error:" lines: a misuse gets one short xcs message, not pages of
# template errors. If its second line is "// first error: in this file", the first error must
# point into SOURCE (the user's call), not into xcs's headers.
file(STRINGS "${SOURCE}" head LIMIT_COUNT 2)
list(GET head 0 first)
string(REGEX REPLACE "^// expect: " "" expected "${first}")
execute_process(
  COMMAND "${CXX}" -std=c++20 -fsyntax-only "-I${INCLUDE_DIR}" "${SOURCE}"
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0)
  message(FATAL_ERROR "${SOURCE} compiled, but it must not")
endif()
string(FIND "${err}" "${expected}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "the error does not say '${expected}':\n${err}")
endif()
list(LENGTH head lines)
if(lines GREATER 1)
  list(GET head 1 second)
  if(second STREQUAL "// first error: in this file")
    string(REGEX MATCH "[^\n]*error:" first_error "${err}")
    string(FIND "${first_error}" "${SOURCE}:" at)
    if(NOT at EQUAL 0)
      message(FATAL_ERROR "the first error is not in ${SOURCE}:\n${err}")
    endif()
  endif()
endif()
string(REGEX MATCHALL "error:" errors "${err}")
list(LENGTH errors n)
if(n GREATER MAX_ERRORS)
  message(FATAL_ERROR "${n} error lines (at most ${MAX_ERRORS}):\n${err}")
endif()
message(STATUS "${n} error line(s), with: ${expected}")
