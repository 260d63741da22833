# SPDX-License-Identifier: MIT
# Compiles SOURCE, which must fail with the message its first line names ("// expect: ..."),
# in at most MAX_ERRORS "error:" lines: a misuse gets one short xcs message, not pages of
# template errors.
file(STRINGS "${SOURCE}" first LIMIT_COUNT 1)
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
string(REGEX MATCHALL "error:" errors "${err}")
list(LENGTH errors n)
if(n GREATER MAX_ERRORS)
  message(FATAL_ERROR "${n} error lines (at most ${MAX_ERRORS}):\n${err}")
endif()
message(STATUS "${n} error line(s), with: ${expected}")
