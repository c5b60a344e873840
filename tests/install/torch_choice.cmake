# One torch per build, checked at configure time (cmake/EvogradTorch.cmake)
# and at install time (cmake/EvogradCheckTorchLink.cmake):
#   1. a torch given by CMAKE_PREFIX_PATH, or by the Python named, with a python3 first on PATH that
#      has no torch: the configure takes that torch's libraries and records it;
#   2. the same with torch's libraries resolved to another installation (the
#      cache state a system LibTorch of another version produced): an error
#      naming both;
#   3. a named Python that cannot import torch: an error;
#   4. a built library whose record names another torch than the libc10 it
#      loads: the install check refuses it; with its own record it passes.
#
#   cmake -DSOURCE_DIR=... -DWORK=... -DTORCH_DIR=<Torch_DIR> -DPYTHON=<any python3>
#         -DLIBRARY=<libevograd_ops.so> -DRECORD=<its json> -P torch_choice.cmake
function(configure name expect)
  set(dir ${WORK}/${name})
  file(REMOVE_RECURSE ${dir})
  execute_process(COMMAND ${CMAKE_COMMAND} -E env "PATH=${WORK}/bin:$ENV{PATH}"
                          ${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${dir} -DEVOGRAD_TESTS=OFF
                          -DEVOGRAD_CUDA=OFF ${ARGN}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(expect STREQUAL "ok" AND NOT rc EQUAL 0)
    message(FATAL_ERROR "${name}: configure failed:\n${out}")
  elseif(NOT expect STREQUAL "ok")
    if(rc EQUAL 0)
      message(FATAL_ERROR "${name}: configure succeeded, expected an error matching '${expect}':\n${out}")
    endif()
    string(REGEX REPLACE "[ \n]+" " " flat "${out}")
    if(NOT flat MATCHES "${expect}")
      message(FATAL_ERROR "${name}: the error does not say '${expect}':\n${out}")
    endif()
  endif()
  message(STATUS "${name}: as expected")
  set(cache "${dir}/CMakeCache.txt" PARENT_SCOPE)
  set(build "${dir}" PARENT_SCOPE)
endfunction()

file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/bin)
execute_process(COMMAND ${PYTHON} -m venv --without-pip ${WORK}/notorch RESULT_VARIABLE rc)
set(NOTORCH_PYTHON ${WORK}/notorch/bin/python3)
if(NOT rc EQUAL 0 OR NOT EXISTS ${NOTORCH_PYTHON})
  message(FATAL_ERROR "cannot make a venv without torch from ${PYTHON}")
endif()
file(CREATE_LINK ${NOTORCH_PYTHON} ${WORK}/bin/python3 SYMBOLIC)
get_filename_component(prefix "${TORCH_DIR}/.." ABSOLUTE)
get_filename_component(torch_lib_dir_real "${TORCH_DIR}" REALPATH)

# 1
configure(prefix_path_only ok "-DCMAKE_PREFIX_PATH=${prefix}")
file(STRINGS ${cache} c10 REGEX "^c10_LIBRARY:")
string(REGEX REPLACE "^[^=]*=" "" c10 "${c10}")
file(STRINGS ${cache} torch_dir REGEX "^Torch_DIR:")
string(REGEX REPLACE "^[^=]*=" "" torch_dir "${torch_dir}")
get_filename_component(torch_dir "${torch_dir}" REALPATH)
if(NOT torch_dir STREQUAL torch_lib_dir_real)
  message(FATAL_ERROR "prefix_path_only: built against ${torch_dir}, not ${TORCH_DIR}")
endif()
file(READ ${build}/libevograd_ops.json built)
file(READ ${RECORD} own)
string(REGEX MATCH "\"torch\": \"[0-9]+\\.[0-9]+\\.[0-9]+" built "${built}")
string(REGEX MATCH "\"torch\": \"[0-9]+\\.[0-9]+\\.[0-9]+" own "${own}")
if(NOT built STREQUAL own)
  message(FATAL_ERROR "prefix_path_only records ${built}, this build's torch is ${own}")
endif()
include(${SOURCE_DIR}/cmake/EvogradTorchVersion.cmake)
evograd_torch_release_of_library("${c10}" linked)
string(REGEX REPLACE "\"torch\": \"" "" own_release "${own}")
evograd_same_torch_release("${linked}" "${own_release}" same)
if(NOT same)
  message(FATAL_ERROR "prefix_path_only: links ${c10} (torch ${linked}), not torch ${own_release}")
endif()

# 1b: the Python named, as pip names its own: every library of torch's
# targets (Caffe2's torch_cpu too, whose package the default search would
# take from a system LibTorch) from that Python's torch, or a configure error
configure(python_named ok "-DEVOGRAD_PYTHON=${PYTHON}")
file(STRINGS ${cache} caffe2 REGEX "^Caffe2_DIR:")
string(REGEX REPLACE "^[^=]*=" "" caffe2 "${caffe2}")
get_filename_component(caffe2 "${caffe2}/.." REALPATH)
get_filename_component(packages "${TORCH_DIR}/.." REALPATH)
if(NOT caffe2 STREQUAL packages)
  message(FATAL_ERROR "python_named: Caffe2's package from ${caffe2}, torch's from ${packages}")
endif()

# 2: a stand-in libc10 of another release, as Debian names its files
file(MAKE_DIRECTORY ${WORK}/other/lib)
file(WRITE ${WORK}/other/lib/libc10.so.0.9.0 "")
file(WRITE ${WORK}/other/lib/libtorch.so.0.9.0 "")
configure(libraries_of_another_torch "two torch installations are mixed.*libc10.so.0.9.0 \\(torch 0.9.0\\).*EVOGRAD_PYTHON"
          "-DCMAKE_PREFIX_PATH=${prefix}" "-Dc10_LIBRARY=${WORK}/other/lib/libc10.so.0.9.0"
          "-DTORCH_LIBRARY=${WORK}/other/lib/libtorch.so.0.9.0")

# 3
configure(python_without_torch "cannot import torch" "-DEVOGRAD_PYTHON=${NOTORCH_PYTHON}")

# 4
set(check ${SOURCE_DIR}/cmake/EvogradCheckTorchLink.cmake)
execute_process(COMMAND ${CMAKE_COMMAND} -DLIBRARIES=${LIBRARY} -DRECORD=${RECORD} -P ${check}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the install check refuses this build's own library:\n${out}")
endif()
file(WRITE ${WORK}/forged.json "{\"evograd\": \"0.0.0\", \"torch\": \"0.9.0\", \"cuda_operators\": false}\n")
execute_process(COMMAND ${CMAKE_COMMAND} -DLIBRARIES=${LIBRARY} -DRECORD=${WORK}/forged.json -P ${check}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
string(REGEX REPLACE "[ \n]+" " " flat "${out}")  # CMake wraps messages at the terminal width
if(rc EQUAL 0 OR NOT flat MATCHES "records torch 0\\.9\\.0 ")
  message(FATAL_ERROR "the install check accepted a library recording torch 0.9.0:\n${out}")
endif()
message(STATUS "install check: refuses a record of another torch, accepts its own")
