# SPDX-License-Identifier: MIT
# Run by ctest as strict_warnings_<compiler> (cmake -P): compiles public_headers.cpp with the
# warnings users turn on, as errors, links it against the built library and runs it.
#
# Inputs (-D): CXX, SOURCE, OUTPUT, XCS_INCLUDE, XCS_LIBRARY, SYSTEM_INCLUDES (list),
#              LINK_LIBRARIES (list)
cmake_minimum_required(VERSION 3.20)

foreach(input CXX SOURCE OUTPUT XCS_INCLUDE XCS_LIBRARY)
  if(NOT ${input})
    message(FATAL_ERROR "run_strict_warnings.cmake: -D${input}=... is required")
  endif()
endforeach()

set(flags -std=c++20 -O2 -Werror -Wall -Wextra -Wpedantic -Wshadow -Wconversion)
set(includes "-I${XCS_INCLUDE}")
foreach(dir IN LISTS SYSTEM_INCLUDES)
  list(APPEND includes "-isystem" "${dir}")
endforeach()
list(JOIN flags " " shown)
message(STATUS "strict_warnings: ${CXX} ${shown}")
execute_process(
  COMMAND "${CXX}" ${flags} ${includes} "${SOURCE}" "${XCS_LIBRARY}" ${LINK_LIBRARIES} -pthread
          -o "${OUTPUT}"
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "strict_warnings: <xcs/xcs.hpp> does not compile warning-free with ${CXX}")
endif()
execute_process(COMMAND "${OUTPUT}" RESULT_VARIABLE rc OUTPUT_QUIET)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "strict_warnings: the program built with ${CXX} failed (${rc})")
endif()
