# The CMake package as a LibTorch user meets it: installs this build's
# "development" component into a fresh prefix, builds examples/cpp against
# it out of tree with find_package(evograd), together with the README's C++
# example copied verbatim, and runs both.
# With -DPREFIX=<an installed package> (the README's install commands run
# by tests/install/readme_commands.py) it builds against that instead.
#   cmake -DBUILD_DIR=... -DSOURCE_DIR=... -DWORK=... [-DCUDA_ROOT=...] -P consumer.cmake
#   cmake -DPREFIX=... -DSOURCE_DIR=... -DWORK=... -P consumer.cmake
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  message("${out}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
endfunction()

file(REMOVE_RECURSE ${WORK})
if(NOT PREFIX)
  set(PREFIX ${WORK}/prefix)
  run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${PREFIX} --component development)
endif()
foreach(f include/evograd/evograd.h include/evograd/evograd.hpp include/evograd/version.h
          lib/libevograd_kernels.so lib/libevograd.so
          lib/libevograd_ops.so lib/libevograd_kernels.a lib/cmake/evograd/evograd-config.cmake
          lib/cmake/evograd/evograd-config-version.cmake)
  if(NOT EXISTS ${PREFIX}/${f})
    message(FATAL_ERROR "not installed: ${f}")
  endif()
endforeach()

# The README's example: the cpp block after its marker, exactly as written.
file(READ ${SOURCE_DIR}/README.md readme)
string(FIND "${readme}" "<!-- readme_example.cpp -->" at)
if(at EQUAL -1)
  message(FATAL_ERROR "README.md has no <!-- readme_example.cpp --> block")
endif()
string(SUBSTRING "${readme}" ${at} -1 readme)
string(FIND "${readme}" "```cpp\n" open)
math(EXPR open "${open} + 7")
string(SUBSTRING "${readme}" ${open} -1 readme)
string(FIND "${readme}" "\n```" close)
string(SUBSTRING "${readme}" 0 ${close} code)
file(WRITE ${WORK}/readme_example.cpp "${code}\n")

# Only the install prefix: the package must find its torch by itself. (A CUDA
# build of torch also needs the CUDA toolkit named, as any LibTorch program does.)
set(cuda_hint)
if(CUDA_ROOT)
  set(cuda_hint -DCUDA_TOOLKIT_ROOT_DIR=${CUDA_ROOT})
endif()
run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/examples/cpp -B ${WORK}/build -DCMAKE_BUILD_TYPE=Release
    -DCMAKE_PREFIX_PATH=${PREFIX} -DEVOGRAD_README_EXAMPLE=${WORK}/readme_example.cpp
    ${cuda_hint})
run(${CMAKE_COMMAND} --build ${WORK}/build -j2)
# The installed libraries carry no path into the build tree.
run(readelf -d ${PREFIX}/lib/libevograd.so)
if(BUILD_DIR AND last_output MATCHES "${BUILD_DIR}")
  message(FATAL_ERROR "libevograd.so's RPATH points into the build tree ${BUILD_DIR}")
endif()
run(${WORK}/build/evograd_1d --repetitions 10)
run(${WORK}/build/readme_example)
if(NOT last_output MATCHES "validation loss after the inner step: [0-9]")
  message(FATAL_ERROR "README example printed no validation loss")
endif()
