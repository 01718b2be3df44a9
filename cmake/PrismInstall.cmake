# `cmake --install` provides the prism::prism CMake package (tests/package/ consumes it).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/prism DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS ${PRISM_MODULE_TARGETS} prism EXPORT prismTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
if(TARGET prism_kernels)
  install(TARGETS prism_kernels EXPORT prismTargets ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
endif()
install(EXPORT prismTargets NAMESPACE prism:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/prism)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/prismConfig.cmake.in
  ${CMAKE_BINARY_DIR}/prismConfig.cmake INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/prism)
write_basic_package_version_file(${CMAKE_BINARY_DIR}/prismConfigVersion.cmake COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_BINARY_DIR}/prismConfig.cmake ${CMAKE_BINARY_DIR}/prismConfigVersion.cmake
  ${PROJECT_SOURCE_DIR}/cmake/TorchFromWheel.cmake DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/prism)
