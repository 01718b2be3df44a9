# ccache speeds up rebuilds of the torch-heavy TUs; the sloppiness settings are needed for the PCH.
find_program(PRISM_CCACHE ccache)
if(PRISM_CCACHE AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  # BASEDIR makes paths relative in the hash, so a fresh clone elsewhere (CI) hits the same cache.
  set(CMAKE_CXX_COMPILER_LAUNCHER ${CMAKE_COMMAND} -E env
      CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
      CCACHE_BASEDIR=${CMAKE_SOURCE_DIR} ${PRISM_CCACHE})
  set(CMAKE_CUDA_COMPILER_LAUNCHER ${PRISM_CCACHE})
endif()
