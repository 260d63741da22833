# SPDX-License-Identifier: MIT
# cmake -DEXE=<program> "-DARGS=<a;b>" -DEXIT_CODE=<n> -DMESSAGE=<regex> -P expect_failure.cmake
# Runs the program and fails unless it exits with EXIT_CODE and its output matches MESSAGE.
execute_process(COMMAND "${EXE}" ${ARGS} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                ERROR_VARIABLE err)
if(NOT rc STREQUAL "${EXIT_CODE}")
  message(FATAL_ERROR "${EXE} ${ARGS}: exit code ${rc}, expected ${EXIT_CODE}\n${out}${err}")
endif()
if(NOT "${out}${err}" MATCHES "${MESSAGE}")
  message(FATAL_ERROR "${EXE} ${ARGS}: the output does not match '${MESSAGE}':\n${out}${err}")
endif()
message(STATUS "exit code ${rc}: ${err}")
