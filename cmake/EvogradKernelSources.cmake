# The C kernels' sources and their compile flags, shared by the library
# (CMakeLists.txt), its sanitized test build (tests/) and the fuzz targets
# (tests/fuzz/), so that every build compiles the same code the same way.
#
#   evograd_kernel_sources(<root> <out-var>)  sources under <root>, absolute,
#                                             with their per-file flags set in
#                                             the calling directory
#
# All files: no contraction of a multiply and an add into an FMA (it would
# change the last bit between builds); no errno from sqrt and no trapping
# floating-point exceptions (the kernels never read the flags), so that loops
# with sqrt and with selects between computed values vectorise. Neither
# changes a result: no reassociation, no change of rounding. The segment kernels are
# built once per instruction set (csrc/cpu/isa/); dispatch.c picks one at run
# time, and the x86 ones only exist on x86-64.
function(evograd_kernel_sources root out)
  set(files csrc/status.c csrc/common/validate.c csrc/cpu/total_numel.c
            csrc/cpu/noise_values.c csrc/cpu/perturb.c csrc/cpu/combine.c csrc/cpu/project.c
            csrc/cpu/weights.c csrc/cpu/dispatch.c csrc/cpu/isa/portable.c)
  if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
    list(APPEND files csrc/cpu/isa/avx2.c csrc/cpu/isa/avx512.c)
    set_source_files_properties(${root}/csrc/cpu/isa/avx2.c PROPERTIES COMPILE_OPTIONS "-mavx2")
    set_source_files_properties(${root}/csrc/cpu/isa/avx512.c PROPERTIES COMPILE_OPTIONS
        "-mavx512f;-mavx512dq;-mavx512bw;-mavx512vl;-mprefer-vector-width=512")
  endif()
  list(TRANSFORM files PREPEND "${root}/")
  set(${out} ${files} PARENT_SCOPE)
endfunction()

set(EVOGRAD_KERNEL_FLAGS -ffp-contract=off -fno-math-errno -fno-trapping-math -Wno-psabi)
