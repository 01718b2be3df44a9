# Imports LibTorch from a torch wheel (or an unpacked LibTorch) as the target prism::torch.
#
# Why not find_package(Torch): TorchConfig requires a CUDA toolkit at configure time for CUDA
# builds, rewrites CMAKE_CUDA_FLAGS globally with every architecture, and injects USE_C10D_*
# definitions. prism only needs headers + libraries, so it imports them directly and stays
# buildable on machines without nvcc.
#
# Lookup order: -DPRISM_TORCH_ROOT=<dir with include/ and lib/>, -DTorch_DIR=<root>/share/cmake/Torch,
# then `${PRISM_PYTHON} -c "import torch"` (PRISM_PYTHON defaults to python3 on PATH).
if(TARGET prism::torch)
  return()
endif()

if(NOT PRISM_TORCH_ROOT AND Torch_DIR)
  get_filename_component(PRISM_TORCH_ROOT "${Torch_DIR}/../../.." ABSOLUTE)
endif()
if(NOT PRISM_TORCH_ROOT)
  if(NOT PRISM_PYTHON)
    find_program(PRISM_PYTHON NAMES python3 python)
  endif()
  execute_process(
    COMMAND ${PRISM_PYTHON} -c "import os, torch; print(os.path.dirname(torch.__file__)); print(torch.__version__)"
    OUTPUT_VARIABLE _prism_torch_out RESULT_VARIABLE _prism_torch_rc ERROR_QUIET
    OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT _prism_torch_rc EQUAL 0)
    message(FATAL_ERROR "prism: LibTorch not found. Run tools/setup.sh, or pass -DPRISM_PYTHON=<python with torch>, "
                        "-DTorch_DIR=<libtorch>/share/cmake/Torch or -DPRISM_TORCH_ROOT=<libtorch>.")
  endif()
  string(REPLACE "\n" ";" _prism_torch_out "${_prism_torch_out}")
  list(GET _prism_torch_out 0 PRISM_TORCH_ROOT)
  list(GET _prism_torch_out 1 PRISM_TORCH_VERSION)
endif()
set(PRISM_TORCH_ROOT "${PRISM_TORCH_ROOT}" CACHE PATH "LibTorch root (include/, lib/)" FORCE)

if(NOT EXISTS "${PRISM_TORCH_ROOT}/include/ATen/ATen.h")
  message(FATAL_ERROR "prism: ${PRISM_TORCH_ROOT} has no include/ATen/ATen.h: not a LibTorch root")
endif()

set(_tl "${PRISM_TORCH_ROOT}/lib")
add_library(prism::torch INTERFACE IMPORTED GLOBAL)
set(PRISM_TORCH_INCLUDE_DIRS "${PRISM_TORCH_ROOT}/include" "${PRISM_TORCH_ROOT}/include/torch/csrc/api/include")
target_include_directories(prism::torch SYSTEM INTERFACE ${PRISM_TORCH_INCLUDE_DIRS})
# libstdc++ must come before libtorch in NEEDED: the wheel's libtorch exports its own older copies of
# std::filesystem functions (remove_all jumps to address 0 with GCC 12's libstdc++) and would
# otherwise interpose the system's. (prism itself also avoids std::filesystem: prism/core/fs.h.)
set(_libs "-Wl,--no-as-needed" "-lstdc++" "-Wl,--as-needed" "${_tl}/libtorch.so" "${_tl}/libtorch_cpu.so" "${_tl}/libc10.so")
# libtorch_cuda registers CUDA kernels from static initializers: keep it despite --as-needed,
# otherwise tensors cannot move to CUDA ("Cannot initialize CUDA without ATen_cuda library").
if(EXISTS "${_tl}/libtorch_cuda.so")
  set(PRISM_TORCH_HAS_CUDA ON)
  list(APPEND _libs "-Wl,--no-as-needed,${_tl}/libtorch_cuda.so,${_tl}/libc10_cuda.so" "-Wl,--as-needed")
else()
  set(PRISM_TORCH_HAS_CUDA OFF)
endif()
target_link_libraries(prism::torch INTERFACE ${_libs})
# at::parallel_for is a header template that runs in parallel only where _OPENMP is defined (the
# wheel's ATen is built with OpenMP): without -fopenmp every prism loop written with it ran on one
# thread. The objects then call the same libgomp as the wheel's (one SONAME, loaded once).
file(STRINGS "${PRISM_TORCH_ROOT}/include/ATen/Config.h" _prism_at_omp REGEX "define AT_PARALLEL_OPENMP 1")
if(_prism_at_omp)
  target_compile_options(prism::torch INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-fopenmp>)
  target_link_options(prism::torch INTERFACE -fopenmp)
endif()
# The wheel's libraries find their nvidia/* siblings through their own DT_RPATH; our binaries only
# need the torch lib dir.
set(PRISM_TORCH_LIB_DIR "${_tl}")
message(STATUS "prism: LibTorch ${PRISM_TORCH_VERSION} at ${PRISM_TORCH_ROOT} (CUDA libs: ${PRISM_TORCH_HAS_CUDA})")
