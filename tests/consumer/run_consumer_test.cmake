# SPDX-License-Identifier: MIT
# Run by ctest as consumer_find_package (cmake -P): installs the xcs build into a
# scratch prefix, checks that the package links no absolute path, moves the prefix elsewhere,
# then builds and runs tests/consumer/main.cpp against it, first through
# find_package(xcs CONFIG), then through pkg-config alone.
#
# With WITH_REDIS=ON (the build has the component xcs::redis), the consumer also finds it with
# find_package(xcs COMPONENTS redis) and runs a program that links xcs::redis.
#
# Inputs (-D): XCS_BUILD_DIR, XCS_BUILD_CONFIG, CONSUMER_SOURCE_DIR, WORK_DIR,
#              GENERATOR, MAKE_PROGRAM, CXX_COMPILER, PKG_CONFIG, WITH_REDIS
cmake_minimum_required(VERSION 3.20)

foreach(input XCS_BUILD_DIR CONSUMER_SOURCE_DIR WORK_DIR GENERATOR CXX_COMPILER)
  if(NOT ${input})
    message(FATAL_ERROR "run_consumer_test.cmake: -D${input}=... is required")
  endif()
endforeach()
if(NOT XCS_BUILD_CONFIG)
  set(XCS_BUILD_CONFIG Release)
endif()

set(prefix "${WORK_DIR}/prefix")
set(build "${WORK_DIR}/build")
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

function(run step)
  list(JOIN ARGN " " command_line)
  message(STATUS "consumer: ${step}: ${command_line}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "consumer: ${step} failed (${rc})")
  endif()
endfunction()

# 1. Install, as a user would.
run("install" "${CMAKE_COMMAND}" --install "${XCS_BUILD_DIR}" --prefix "${prefix}"
    --config "${XCS_BUILD_CONFIG}")

# The package names no file outside its prefix (the build machine's GCC, say): no absolute
# path in what it hands a consumer's link line.
file(GLOB_RECURSE package_files "${prefix}/*.cmake" "${prefix}/*.pc")
foreach(file IN LISTS package_files)
  file(STRINGS "${file}" link_lines REGEX "INTERFACE_LINK_LIBRARIES|^Libs")
  foreach(line IN LISTS link_lines)
    if(line MATCHES "(^|[ ;\":])(/[^ ;\"]*)")
      message(FATAL_ERROR "consumer: ${file} links an absolute path, '${CMAKE_MATCH_2}': ${line}")
    endif()
  endforeach()
endforeach()

# And it works wherever it is moved to.
file(RENAME "${prefix}" "${WORK_DIR}/moved-prefix")
set(prefix "${WORK_DIR}/moved-prefix")

# 2. find_package(xcs CONFIG) from that prefix.
set(configure_args -S "${CONSUMER_SOURCE_DIR}" -B "${build}" -G "${GENERATOR}"
    "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}" "-DCMAKE_PREFIX_PATH=${prefix}"
    "-DCMAKE_BUILD_TYPE=${XCS_BUILD_CONFIG}")
if(MAKE_PROGRAM)
  list(APPEND configure_args "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}")
endif()
if(WITH_REDIS)
  list(APPEND configure_args "-DXCS_CONSUMER_REDIS=ON")
endif()
run("configure" "${CMAKE_COMMAND}" ${configure_args})

# A system-wide xcs must not stand in for the one just installed.
file(STRINGS "${build}/CMakeCache.txt" xcs_dir_line REGEX "^xcs_DIR:")
string(REGEX REPLACE "^xcs_DIR:[A-Z]*=" "" xcs_dir "${xcs_dir_line}")
file(REAL_PATH "${prefix}" real_prefix)
file(REAL_PATH "${xcs_dir}" real_xcs_dir)
string(FIND "${real_xcs_dir}" "${real_prefix}/" at)
if(NOT at EQUAL 0)
  message(FATAL_ERROR "consumer: found xcs in '${xcs_dir}', not under '${prefix}'")
endif()

run("build" "${CMAKE_COMMAND}" --build "${build}" --config "${XCS_BUILD_CONFIG}")
set(consumer "${build}/consumer")
if(NOT EXISTS "${consumer}")
  set(consumer "${build}/${XCS_BUILD_CONFIG}/consumer")
endif()
run("run (find_package)" "${consumer}")
if(WITH_REDIS)
  get_filename_component(consumer_dir "${consumer}" DIRECTORY)
  run("run (find_package, COMPONENTS redis)" "${consumer_dir}/consumer_redis")
endif()

# 3. pkg-config: the flags alone must compile, link and run the same program.
if(NOT PKG_CONFIG)
  message(FATAL_ERROR "consumer: pkg-config was not found (scripts/install-deps.sh installs it)")
endif()
file(GLOB_RECURSE pc_files "${prefix}/*/pkgconfig/xcs.pc")
list(LENGTH pc_files pc_count)
if(NOT pc_count EQUAL 1)
  message(FATAL_ERROR "consumer: expected one installed xcs.pc under ${prefix}, found: ${pc_files}")
endif()
get_filename_component(pc_dir "${pc_files}" DIRECTORY)
set(ENV{PKG_CONFIG_PATH} "${pc_dir}")
execute_process(COMMAND "${PKG_CONFIG}" --cflags --libs xcs
                OUTPUT_VARIABLE pc_flags OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "consumer: 'pkg-config --cflags --libs xcs' failed (${rc})")
endif()
message(STATUS "consumer: pkg-config --cflags --libs xcs: ${pc_flags}")
separate_arguments(pc_flags UNIX_COMMAND "${pc_flags}")
run("build (pkg-config)" "${CXX_COMPILER}" "${CONSUMER_SOURCE_DIR}/main.cpp"
    -o "${WORK_DIR}/consumer_pkg_config" ${pc_flags})
run("run (pkg-config)" "${WORK_DIR}/consumer_pkg_config")
