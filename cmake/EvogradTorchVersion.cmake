# Which torch release a LibTorch file belongs to, read from the file's own
# installation (no Python, no CMake package): used when configuring, and by the
# install-time check that a library is linked to the torch it records.
#
#   evograd_torch_release_of_library(<libc10 path> <out>)   -> "2.13.0", "1.13", or ""
#   evograd_torch_release_of_headers(<include dirs> <out>)  -> "2.13.0" or ""

# A versioned file name (Debian: libc10.so.1.13.0) says it; an unversioned
# one (pip, the LibTorch archive) lies in a torch tree that says it: pip's
# torch/version.py, or the headers' torch/version.h beside lib/.
function(evograd_torch_release_of_library lib out)
  get_filename_component(real "${lib}" REALPATH)
  get_filename_component(name "${real}" NAME)
  if(name MATCHES "\\.so\\.([0-9]+\\.[0-9]+(\\.[0-9]+)?)$")
    set(${out} "${CMAKE_MATCH_1}" PARENT_SCOPE)
    return()
  endif()
  get_filename_component(dir "${real}" DIRECTORY)
  get_filename_component(root "${dir}/.." ABSOLUTE)
  if(EXISTS "${root}/version.py")
    file(STRINGS "${root}/version.py" line REGEX "^__version__")
    if(line MATCHES "['\"]([0-9]+\\.[0-9]+\\.[0-9]+)")
      set(${out} "${CMAKE_MATCH_1}" PARENT_SCOPE)
      return()
    endif()
  endif()
  evograd_torch_release_of_headers("${root}/include;${root}/include/torch/csrc/api/include" release)
  set(${out} "${release}" PARENT_SCOPE)
endfunction()

function(evograd_torch_release_of_headers dirs out)
  set(${out} "" PARENT_SCOPE)
  foreach(d IN LISTS dirs)
    # torch 2.x keeps the numbers in headeronly/version.h, included by version.h
    foreach(f torch/headeronly/version.h torch/version.h)
      if(NOT EXISTS "${d}/${f}")
        continue()
      endif()
      file(STRINGS "${d}/${f}" lines REGEX "#define TORCH_VERSION_(MAJOR|MINOR|PATCH) ")
      set(parts)
      foreach(part MAJOR MINOR PATCH)
        foreach(l IN LISTS lines)
          if(l MATCHES "TORCH_VERSION_${part} ([0-9]+)")
            list(APPEND parts ${CMAKE_MATCH_1})
          endif()
        endforeach()
      endforeach()
      list(LENGTH parts n)
      if(n EQUAL 3)
        list(JOIN parts "." release)
        set(${out} "${release}" PARENT_SCOPE)
        return()
      endif()
    endforeach()
  endforeach()
endfunction()

# Whether two releases name the same torch: "1.13" (a soname) matches "1.13.0".
function(evograd_same_torch_release a b out)
  string(REGEX MATCH "^[0-9]+\\.[0-9]+" a2 "${a}")
  string(REGEX MATCH "^[0-9]+\\.[0-9]+" b2 "${b}")
  string(REGEX MATCH "^[0-9]+\\.[0-9]+\\.[0-9]+" a3 "${a}")
  string(REGEX MATCH "^[0-9]+\\.[0-9]+\\.[0-9]+" b3 "${b}")
  if(NOT a2 OR NOT b2 OR NOT a2 VERSION_EQUAL b2)
    set(${out} FALSE PARENT_SCOPE)
  elseif(a3 AND b3 AND NOT a3 VERSION_EQUAL b3)
    set(${out} FALSE PARENT_SCOPE)
  else()
    set(${out} TRUE PARENT_SCOPE)
  endif()
endfunction()
