# What `cmake --install` puts where, the CMake package and pkg-config file
# that find it, and the Debian package (CPack) that carries it all.
#
#   bin/vigil                                  the command
#   include/vigil/...                          headers: vigil.hpp, one folder
#                                              per component, the generated
#                                              .pb.h and their .proto
#   LIBDIR/libvigil_*.a                        one static library per component
#   LIBDIR/cmake/vigil/                        vigilConfig.cmake, vigilTargets
#   LIBDIR/pkgconfig/vigil.pc
#   share/doc/vigil/examples/policies/         policies the command runs
#   share/doc/vigil/examples/my_agents/        a project of one's own
include(CMakePackageConfigHelpers)

set(VIGIL_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/vigil)

install(TARGETS vigil_all EXPORT vigilTargets)
install(FILES ${PROJECT_SOURCE_DIR}/include/vigil/vigil.hpp
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/vigil COMPONENT development)
install(EXPORT vigilTargets NAMESPACE vigil:: DESTINATION ${VIGIL_CMAKE_DIR}
        COMPONENT development)
# vigil::command comes with bin/vigil: a `cmake --install --component
# development` has no command, and the package config does without it.
install(EXPORT vigilCommandTargets NAMESPACE vigil::
        DESTINATION ${VIGIL_CMAKE_DIR} COMPONENT runtime)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/vigilConfig.cmake.in
  ${PROJECT_BINARY_DIR}/vigilConfig.cmake INSTALL_DESTINATION ${VIGIL_CMAKE_DIR}
  PATH_VARS CMAKE_INSTALL_INCLUDEDIR)
# 0.x: a minor release may change the API, so 0.2 accepts 0.2.* only.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/vigilConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/vigilConfig.cmake
              ${PROJECT_BINARY_DIR}/vigilConfigVersion.cmake
              ${PROJECT_SOURCE_DIR}/cmake/vigilImports.cmake
        DESTINATION ${VIGIL_CMAKE_DIR} COMPONENT development)

# pkg-config, relocatable: the prefix is found from the .pc file's own place.
file(RELATIVE_PATH VIGIL_PC_TO_PREFIX
     /prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig /prefix)
string(REGEX REPLACE "/$" "" VIGIL_PC_TO_PREFIX "${VIGIL_PC_TO_PREFIX}")
configure_file(${PROJECT_SOURCE_DIR}/cmake/vigil.pc.in
               ${PROJECT_BINARY_DIR}/vigil.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/vigil.pc
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT development)

# The policies the installed `vigil` runs with its built-in agents, and the
# project that the README's "Use vigil in your project" starts from.
install(FILES README.md DESTINATION ${CMAKE_INSTALL_DOCDIR} COMPONENT runtime)
foreach(p chaos saga durable_saga shared tools)
  install(FILES ${PROJECT_SOURCE_DIR}/examples/policies/${p}.yaml
          DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples/policies
          COMPONENT runtime)
endforeach()
install(DIRECTORY ${PROJECT_SOURCE_DIR}/examples/my_agents
        DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples COMPONENT development)
# The default alert rules (Prometheus rules file) and their promtool tests.
install(FILES ${PROJECT_SOURCE_DIR}/examples/monitoring/alerts.yml
              ${PROJECT_SOURCE_DIR}/examples/monitoring/alerts_test.yml
        DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples/monitoring
        COMPONENT runtime)

# `cmake --install --strip` and the .deb: CMake strips executables only;
# the static libraries' debug info is most of their size (about 300 MB of
# 330 in a RelWithDebInfo build).
install(CODE "
  if(CMAKE_INSTALL_DO_STRIP)
    file(GLOB _vigil_libs
         \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}/libvigil_*.a\")
    foreach(_vigil_lib \${_vigil_libs})
      execute_process(COMMAND \"${CMAKE_STRIP}\" --strip-debug \"\${_vigil_lib}\"
                      RESULT_VARIABLE _vigil_rc)
      if(NOT _vigil_rc EQUAL 0)
        message(FATAL_ERROR \"strip --strip-debug \${_vigil_lib} failed\")
      endif()
    endforeach()
  endif()" COMPONENT development)

# The Debian package: vigil_<version>_amd64.deb, in /usr. Its Depends are
# the shared libraries of bin/vigil (dpkg-shlibdeps) and the -dev packages a
# project building against vigil needs, pinned to the releases whose ABI
# the static libraries were built against; a compiler and CMake are
# recommended.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME vigil)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${PROJECT_DESCRIPTION}")
set(CPACK_PACKAGE_DESCRIPTION
"The vigil command (run, check, inspect, verify, repair, backup a policy
file's tree and its data dir) and the development files: headers, static
libraries, a CMake package (find_package(vigil)) and a pkg-config file.")
set(CPACK_PACKAGE_CONTACT "vigil developers")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES TRUE)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION devel)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS
    "libcaf-dev (>= 0.17.6), libcaf-dev (<< 0.18), libprotobuf-dev (>= 3.21), libprotobuf-dev (<< 3.22), protobuf-compiler (>= 3.21), protobuf-compiler (<< 3.22), liblmdb-dev, libspdlog-dev (>= 1:1.10), libspdlog-dev (<< 1:1.11), libyaml-cpp-dev (>= 0.7), libyaml-cpp-dev (<< 0.8), libcpp-httplib-dev (>= 0.11.4), libcpp-httplib-dev (<< 0.12), libssl-dev, zlib1g-dev, libbrotli-dev, prometheus-cpp-dev (>= 1.0), prometheus-cpp-dev (<< 1.1), pkgconf")
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "g++, cmake (>= 3.22), make")
include(CPack)
