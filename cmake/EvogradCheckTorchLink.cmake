# Refuses a library whose libc10, as the dynamic loader would find it from
# the library's own NEEDED and RUNPATH, belongs to another torch than the one
# its build record names. Run at install time (so such a library cannot be
# installed) and by the tests:
#
#   cmake -DLIBRARIES="a.so;b.so" -DRECORD=libevograd_ops.json -P EvogradCheckTorchLink.cmake
include(${CMAKE_CURRENT_LIST_DIR}/EvogradTorchVersion.cmake)

file(READ "${RECORD}" record)
if(NOT record MATCHES "\"torch\": \"([^\"]+)\"")
  message(FATAL_ERROR "evograd: ${RECORD} names no torch")
endif()
set(recorded "${CMAKE_MATCH_1}")

find_program(objdump NAMES objdump)
set(CMAKE_GET_RUNTIME_DEPENDENCIES_PLATFORM "linux+elf")
set(CMAKE_GET_RUNTIME_DEPENDENCIES_TOOL "objdump")
set(CMAKE_GET_RUNTIME_DEPENDENCIES_COMMAND "${objdump}")
foreach(lib IN LISTS LIBRARIES)
  file(GET_RUNTIME_DEPENDENCIES LIBRARIES "${lib}"
       RESOLVED_DEPENDENCIES_VAR resolved UNRESOLVED_DEPENDENCIES_VAR unresolved
       PRE_INCLUDE_REGEXES "^lib(c10|torch)[a-z_]*\\.so" PRE_EXCLUDE_REGEXES ".*"
       POST_INCLUDE_REGEXES "/lib(c10|torch)[a-z_]*\\.so" POST_EXCLUDE_REGEXES ".*")
  list(FILTER resolved INCLUDE REGEX "/libc10\\.so")
  if(unresolved OR NOT resolved)
    message(FATAL_ERROR "evograd: ${lib} needs torch's libraries but its RUNPATH does not find "
                        "them all (${unresolved})")
  endif()
  # Each torch library the loader would give it: one folder, the recorded torch.
  file(GET_RUNTIME_DEPENDENCIES LIBRARIES "${lib}" RESOLVED_DEPENDENCIES_VAR all
       PRE_INCLUDE_REGEXES "^lib(c10|torch)[a-z_]*\\.so" PRE_EXCLUDE_REGEXES ".*"
       POST_INCLUDE_REGEXES "/lib(c10|torch)[a-z_]*\\.so" POST_EXCLUDE_REGEXES ".*")
  list(GET resolved 0 c10)
  get_filename_component(c10 "${c10}" REALPATH)  # /lib is /usr/lib on merged-/usr systems
  get_filename_component(c10_dir "${c10}" DIRECTORY)
  foreach(dep IN LISTS all)
    get_filename_component(dep "${dep}" REALPATH)
    get_filename_component(dep_dir "${dep}" DIRECTORY)
    if(NOT dep_dir STREQUAL c10_dir)
      message(FATAL_ERROR "evograd: ${lib} loads ${c10} and ${dep}: two torch installations; "
                          "rebuild in a fresh build folder with one torch named")
    endif()
  endforeach()
  evograd_torch_release_of_library("${c10}" linked)
  evograd_same_torch_release("${recorded}" "${linked}" same)
  if(NOT linked OR NOT same)
    message(FATAL_ERROR
      "evograd: ${lib} records torch ${recorded} (${RECORD}) but links ${c10} "
      "(torch ${linked}): a library of two torches is not installed. Rebuild in a fresh build "
      "folder with one torch named (-DEVOGRAD_PYTHON=... or -DTorch_DIR=...).")
  endif()
  message(STATUS "evograd: ${lib} loads torch from ${c10_dir} (torch ${linked}), as recorded")
endforeach()
