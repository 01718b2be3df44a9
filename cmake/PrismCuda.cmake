# kernels/ is compiled only when nvcc exists (PRISM_WITH_CUDA=AUTO) and torch has CUDA libs.
# Kernel TUs include no torch headers; the binaries still start on machines without a GPU
# because nothing links libcuda (the driver is dlopened lazily by torch / cudart).
set(PRISM_HAS_CUDA_KERNELS OFF)
if(NOT PRISM_WITH_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER AND PRISM_TORCH_HAS_CUDA)
    enable_language(CUDA)
    # Debian's CMake 3.25 knows no C++20 flag for nvcc (its CUDA20 feature list is empty), and
    # CUDA_STANDARD defaults to CXX_STANDARD (20): teach it the flag instead of silently getting 17.
    if(NOT CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
      set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
      set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
      set(CMAKE_CUDA20_COMPILE_FEATURES cuda_std_20)
      list(APPEND CMAKE_CUDA_COMPILE_FEATURES cuda_std_20)
    endif()
    set(CMAKE_CUDA_STANDARD 20)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    set(CMAKE_CUDA_ARCHITECTURES ${PRISM_CUDA_ARCHS})
    set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)
    set(PRISM_HAS_CUDA_KERNELS ON)
    find_package(CUDAToolkit REQUIRED)
  elseif(PRISM_WITH_CUDA STREQUAL "ON")
    message(FATAL_ERROR "PRISM_WITH_CUDA=ON but nvcc or CUDA-enabled LibTorch was not found")
  endif()
endif()
message(STATUS "prism: CUDA kernels ${PRISM_HAS_CUDA_KERNELS}")
