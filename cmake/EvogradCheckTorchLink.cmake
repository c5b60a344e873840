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
       PRE_INCLUDE_REGEXES "^libc10\\.so" PRE_EXCLUDE_REGEXES ".*"
       POST_INCLUDE_REGEXES "/libc10\\.so" POST_EXCLUDE_REGEXES ".*")
  if(unresolved OR NOT resolved)
    message(FATAL_ERROR "evograd: ${lib} needs libc10 but its RUNPATH finds none (${unresolved})")
  endif()
  list(GET resolved 0 c10)
  evograd_torch_release_of_library("${c10}" linked)
  evograd_same_torch_release("${recorded}" "${linked}" same)
  if(NOT linked OR NOT same)
    message(FATAL_ERROR
      "evograd: ${lib} records torch ${recorded} (${RECORD}) but links ${c10} "
      "(torch ${linked}): a library of two torches is not installed. Rebuild in a fresh build "
      "folder with one torch named (-DEVOGRAD_PYTHON=... or -DTorch_DIR=...).")
  endif()
  message(STATUS "evograd: ${lib} links ${c10} (torch ${linked}), as recorded")
endforeach()
