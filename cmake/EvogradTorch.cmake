# One torch per build. The torch whose headers we compile against, whose
# libraries we link, whose version we record and whose Python runs the tests
# must be one installation; two mixed give a library that builds cleanly and
# crashes in a static initialiser before main.
#
# evograd_choose_torch() runs before find_package(Torch). The torch is the
# first of:
#   1. EVOGRAD_PYTHON (pip passes its own Python here): that Python's torch;
#   2. Torch_DIR, or a TorchConfig.cmake on CMAKE_PREFIX_PATH: that package;
#   3. python3 on PATH, when it imports torch;
#   4. CMake's default search (a system LibTorch, e.g. Debian's).
# and its library folder goes ahead of the system's, because torch's package
# looks its libraries up by name and would otherwise take a system copy.
#
# evograd_check_torch() runs after it and fails the configure, naming both
# installations, if the package, its headers, its libraries and the Python
# do not all belong to one torch. It sets EVOGRAD_PYTHON (the Python with this
# torch, or empty) and EVOGRAD_BUILT_FOR_TORCH (the version recorded).
include(${CMAKE_CURRENT_LIST_DIR}/EvogradTorchVersion.cmake)

set(EVOGRAD_PYTHON "" CACHE FILEPATH
    "Python whose torch to build against and test with (default: see cmake/EvogradTorch.cmake)")

# version, CMake prefix, and the libc10 the interpreter really loaded
function(_evograd_ask_python python out_ok out_version out_prefix out_c10)
  execute_process(
    COMMAND "${python}" -c "import os, torch, torch.utils; print(torch.__version__); print(torch.utils.cmake_prefix_path); print(next((os.path.realpath(f[-1]) for f in (l.split() for l in open('/proc/self/maps')) if os.path.basename(f[-1]).startswith('libc10.so')), ''))"
    OUTPUT_VARIABLE info OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE rc ERROR_QUIET)
  if(NOT rc EQUAL 0)
    set(${out_ok} FALSE PARENT_SCOPE)
    return()
  endif()
  string(REPLACE "\n" ";" info "${info}")
  list(GET info 0 version)
  list(GET info 1 prefix)
  list(GET info 2 c10)
  set(${out_ok} TRUE PARENT_SCOPE)
  set(${out_version} "${version}" PARENT_SCOPE)
  set(${out_prefix} "${prefix}" PARENT_SCOPE)
  set(${out_c10} "${c10}" PARENT_SCOPE)
endfunction()

# TorchConfig.cmake in one of the prefixes, in CMake's own layouts for it
function(_evograd_config_on_prefix_path out)
  set(prefixes ${CMAKE_PREFIX_PATH})
  if(DEFINED ENV{CMAKE_PREFIX_PATH})
    string(REPLACE ":" ";" env "$ENV{CMAKE_PREFIX_PATH}")
    list(APPEND prefixes ${env})
  endif()
  foreach(p IN LISTS prefixes)
    foreach(s Torch share/cmake/Torch lib/cmake/Torch lib/${CMAKE_LIBRARY_ARCHITECTURE}/cmake/Torch)
      if(EXISTS "${p}/${s}/TorchConfig.cmake")
        get_filename_component(dir "${p}/${s}" ABSOLUTE)
        set(${out} "${dir}" PARENT_SCOPE)
        return()
      endif()
    endforeach()
  endforeach()
  set(${out} "" PARENT_SCOPE)
endfunction()

macro(evograd_choose_torch)
  set(_evograd_python "${EVOGRAD_PYTHON}")
  set(_evograd_python_named TRUE)
  if(NOT _evograd_python AND SKBUILD AND Python_EXECUTABLE)
    set(_evograd_python "${Python_EXECUTABLE}")
  endif()
  if(NOT _evograd_python)
    set(_evograd_python_named FALSE)
  endif()
  _evograd_config_on_prefix_path(_evograd_prefix_config)

  if(_evograd_python_named)
    _evograd_ask_python("${_evograd_python}" _evograd_py_ok _evograd_py_version _evograd_py_prefix _evograd_py_c10)
    if(NOT _evograd_py_ok)
      message(FATAL_ERROR
        "evograd builds against the torch of ${_evograd_python}, which cannot import torch. "
        "Install torch there first, then build without isolation (pip install --no-build-isolation .), "
        "or name another Python with -DEVOGRAD_PYTHON=...")
    endif()
    set(EVOGRAD_TORCH_CHOSEN_BY "the Python named (${_evograd_python})")
    if(EXISTS "${_evograd_py_prefix}/Torch/TorchConfig.cmake")
      get_filename_component(_evograd_py_config "${_evograd_py_prefix}/Torch" REALPATH)
      foreach(_evograd_other Torch_DIR _evograd_prefix_config)
        if(${_evograd_other})
          get_filename_component(_evograd_other_real "${${_evograd_other}}" REALPATH)
          if(NOT _evograd_other_real STREQUAL _evograd_py_config)
            message(FATAL_ERROR
              "evograd: two torches named: ${_evograd_python} runs torch ${_evograd_py_version} "
              "(${_evograd_py_config}), but ${${_evograd_other}} is another torch's CMake package "
              "(from Torch_DIR or CMAKE_PREFIX_PATH). Name one: -DEVOGRAD_PYTHON alone, or "
              "Torch_DIR/CMAKE_PREFIX_PATH alone (in a fresh build folder).")
          endif()
        endif()
      endforeach()
      set(Torch_DIR "${_evograd_py_config}" CACHE PATH "The torch CMake package built against" FORCE)
    endif()
  elseif(Torch_DIR OR _evograd_prefix_config)
    if(NOT Torch_DIR)
      set(Torch_DIR "${_evograd_prefix_config}" CACHE PATH "The torch CMake package built against" FORCE)
    endif()
    set(EVOGRAD_TORCH_CHOSEN_BY "Torch_DIR / CMAKE_PREFIX_PATH (${Torch_DIR})")
    # python3 on PATH serves (tests, the record) only if it runs this torch;
    # evograd_check_torch() decides once the libraries are known.
    unset(_evograd_path_python CACHE)
    find_program(_evograd_path_python NAMES python3 python)
    set(_evograd_py_ok FALSE)
    if(_evograd_path_python)
      _evograd_ask_python("${_evograd_path_python}" _evograd_py_ok _evograd_py_version _evograd_py_prefix _evograd_py_c10)
      set(_evograd_python "${_evograd_path_python}")
    endif()
  else()
    unset(_evograd_path_python CACHE)
    find_program(_evograd_path_python NAMES python3 python)
    set(_evograd_py_ok FALSE)
    if(_evograd_path_python)
      _evograd_ask_python("${_evograd_path_python}" _evograd_py_ok _evograd_py_version _evograd_py_prefix _evograd_py_c10)
    endif()
    if(_evograd_py_ok)
      set(_evograd_python "${_evograd_path_python}")
      set(_evograd_python_named TRUE)
      set(EVOGRAD_TORCH_CHOSEN_BY "python3 on PATH (${_evograd_python})")
      if(EXISTS "${_evograd_py_prefix}/Torch/TorchConfig.cmake")
        get_filename_component(_evograd_py_config "${_evograd_py_prefix}/Torch" REALPATH)
        set(Torch_DIR "${_evograd_py_config}" CACHE PATH "The torch CMake package built against" FORCE)
      endif()
    else()
      set(EVOGRAD_TORCH_CHOSEN_BY "CMake's default search (no torch named, python3 on PATH has none)")
    endif()
  endif()

  # The chosen torch's packages and libraries ahead of any system LibTorch:
  # TorchConfig finds Caffe2's package (torch_cpu, ...) by the default search
  # before its own folder, and its libraries by name.
  if(Torch_DIR)
    get_filename_component(_evograd_packages "${Torch_DIR}/.." ABSOLUTE)
    list(PREPEND CMAKE_PREFIX_PATH "${_evograd_packages}")
  endif()
  if(_evograd_python_named AND _evograd_py_c10)
    get_filename_component(_evograd_libdir "${_evograd_py_c10}" DIRECTORY)
    list(PREPEND CMAKE_LIBRARY_PATH "${_evograd_libdir}")
  elseif(Torch_DIR)
    foreach(_evograd_up ../../.. ../../../..)
      get_filename_component(_evograd_root "${Torch_DIR}/${_evograd_up}" ABSOLUTE)
      if(IS_DIRECTORY "${_evograd_root}/include/torch")
        list(PREPEND CMAKE_PREFIX_PATH "${_evograd_root}")
        break()
      endif()
    endforeach()
  endif()
endmacro()

macro(evograd_check_torch)
  set(_evograd_c10 "${c10_LIBRARY}")  # torch's package finds c10 by name into this variable
  get_filename_component(_evograd_c10 "${_evograd_c10}" REALPATH)
  get_filename_component(_evograd_torch_lib "${TORCH_LIBRARY}" REALPATH)
  get_filename_component(_evograd_c10_dir "${_evograd_c10}" DIRECTORY)
  # Every library the torch targets link, wherever its package was found.
  set(_evograd_libraries "${_evograd_c10}" "${_evograd_torch_lib}")
  foreach(_evograd_target torch torch_cpu torch_cuda c10 c10_cuda)
    if(TARGET ${_evograd_target})
      get_target_property(_evograd_configs ${_evograd_target} IMPORTED_CONFIGURATIONS)
      set(_evograd_properties IMPORTED_LOCATION)
      foreach(_evograd_config IN LISTS _evograd_configs)
        list(APPEND _evograd_properties IMPORTED_LOCATION_${_evograd_config})
      endforeach()
      foreach(_evograd_property IN LISTS _evograd_properties)
        get_target_property(_evograd_location ${_evograd_target} ${_evograd_property})
        if(_evograd_location)
          get_filename_component(_evograd_location "${_evograd_location}" REALPATH)
          list(APPEND _evograd_libraries "${_evograd_location}")
        endif()
      endforeach()
    endif()
  endforeach()
  set(_evograd_stray "")
  foreach(_evograd_location IN LISTS _evograd_libraries)
    get_filename_component(_evograd_location_dir "${_evograd_location}" DIRECTORY)
    if(NOT _evograd_location_dir STREQUAL _evograd_c10_dir)
      list(APPEND _evograd_stray "${_evograd_location}")
    endif()
  endforeach()
  evograd_torch_release_of_library("${_evograd_c10}" _evograd_lib_release)
  evograd_torch_release_of_headers("${TORCH_INCLUDE_DIRS}" _evograd_header_release)
  set(_evograd_fix
      "Choose one torch, in a fresh build folder: -DEVOGRAD_PYTHON=<a Python whose torch to use>, "
      "or -DTorch_DIR=<that torch's share/cmake/Torch> (with pip's torch: "
      "-DEVOGRAD_PYTHON=\"$(command -v python)\" from the environment that has it).")
  set(_evograd_package "torch's CMake package ${Torch_DIR} (torch ${Torch_VERSION}, headers ${_evograd_header_release})")
  evograd_same_torch_release("${Torch_VERSION}" "${_evograd_lib_release}" _evograd_same_lib)
  evograd_same_torch_release("${Torch_VERSION}" "${_evograd_header_release}" _evograd_same_headers)
  if(NOT _evograd_lib_release OR NOT _evograd_same_lib OR NOT _evograd_same_headers
     OR _evograd_stray)
    set(_evograd_stray_line "")
    if(_evograd_stray)
      list(REMOVE_DUPLICATES _evograd_stray)
      set(_evograd_stray_line
          "  libraries outside ${_evograd_c10_dir}: ${_evograd_stray} (Caffe2 package: ${Caffe2_DIR})\n")
    endif()
    message(FATAL_ERROR
      "evograd: two torch installations are mixed in this configuration:\n"
      "  ${_evograd_package}\n"
      "  its libraries: ${_evograd_c10} (torch ${_evograd_lib_release}) and ${_evograd_torch_lib}\n"
      "${_evograd_stray_line}" ${_evograd_fix})
  endif()

  set(EVOGRAD_TORCH_PY_VERSION "")
  if(_evograd_python AND _evograd_py_ok)
    get_filename_component(_evograd_py_c10_real "${_evograd_py_c10}" REALPATH)
    if(_evograd_py_c10_real STREQUAL _evograd_c10)
      set(EVOGRAD_TORCH_PY_VERSION "${_evograd_py_version}")
    elseif(_evograd_python_named OR EVOGRAD_TESTS)
      message(FATAL_ERROR
        "evograd: two torch installations are mixed in this configuration:\n"
        "  ${_evograd_package}, libraries ${_evograd_c10_dir}\n"
        "  ${_evograd_python} runs torch ${_evograd_py_version} from ${_evograd_py_c10} "
        "(it would record the version and run the tests)\n" ${_evograd_fix})
    endif()
  endif()
  if(EVOGRAD_TORCH_PY_VERSION)
    set(EVOGRAD_PYTHON "${_evograd_python}" CACHE FILEPATH "" FORCE)
    set(EVOGRAD_BUILT_FOR_TORCH "${EVOGRAD_TORCH_PY_VERSION}")
  else()
    if(EVOGRAD_TESTS)
      message(FATAL_ERROR
        "evograd: the test suites need a Python that runs this build's torch (${Torch_DIR}); "
        "name it with -DEVOGRAD_PYTHON=..., or configure with -DEVOGRAD_TESTS=OFF")
    endif()
    set(EVOGRAD_BUILT_FOR_TORCH "${Torch_VERSION}")
  endif()
  set(EVOGRAD_TORCH_LIBRARY_DIR "${_evograd_c10_dir}")
  message(STATUS "evograd: torch ${EVOGRAD_BUILT_FOR_TORCH}, chosen by ${EVOGRAD_TORCH_CHOSEN_BY}; "
                 "libraries ${_evograd_c10_dir}")
endmacro()
