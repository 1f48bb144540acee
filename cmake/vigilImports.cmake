# Imported targets for vigil's dependencies that ship no CMake package
# config on Debian 12: CAF 0.17 (caf::core, caf::io), LMDB (lmdb::lmdb) and
# cpp-httplib (PkgConfig::HTTPLIB, from its .pc file). Included by vigil's
# own build (cmake/vigil.cmake) and by the installed vigilConfig.cmake, so
# that a project linking vigil::vigil needs nothing else. Each target is
# made once, whoever includes this first. What cannot be found is named in
# VIGIL_IMPORTS_MISSING (the includer decides: vigil's build stops, and
# find_package(vigil) reports vigil as not found).

set(VIGIL_IMPORTS_MISSING "")

find_path(CAF_INCLUDE_DIR caf/all.hpp)
find_library(CAF_CORE_LIBRARY caf_core)
find_library(CAF_IO_LIBRARY caf_io)
if(NOT CAF_INCLUDE_DIR OR NOT CAF_CORE_LIBRARY OR NOT CAF_IO_LIBRARY)
  string(APPEND VIGIL_IMPORTS_MISSING
    "CAF 0.17 (caf/all.hpp, libcaf_core, libcaf_io) not found: install "
    "libcaf-dev, or set CAF_INCLUDE_DIR, CAF_CORE_LIBRARY and CAF_IO_LIBRARY. ")
elseif(NOT TARGET caf::core)
  add_library(caf::core UNKNOWN IMPORTED)
  set_target_properties(caf::core PROPERTIES
    IMPORTED_LOCATION ${CAF_CORE_LIBRARY}
    INTERFACE_INCLUDE_DIRECTORIES ${CAF_INCLUDE_DIR}
    INTERFACE_LINK_LIBRARIES Threads::Threads)
endif()
if(CAF_IO_LIBRARY AND NOT TARGET caf::io)
  add_library(caf::io UNKNOWN IMPORTED)
  set_target_properties(caf::io PROPERTIES
    IMPORTED_LOCATION ${CAF_IO_LIBRARY}
    INTERFACE_LINK_LIBRARIES caf::core)
endif()

find_path(LMDB_INCLUDE_DIR lmdb.h)
find_library(LMDB_LIBRARY lmdb)
if(NOT LMDB_INCLUDE_DIR OR NOT LMDB_LIBRARY)
  string(APPEND VIGIL_IMPORTS_MISSING
    "LMDB (lmdb.h, liblmdb) not found: install liblmdb-dev. ")
elseif(NOT TARGET lmdb::lmdb)
  add_library(lmdb::lmdb UNKNOWN IMPORTED)
  set_target_properties(lmdb::lmdb PROPERTIES
    IMPORTED_LOCATION ${LMDB_LIBRARY}
    INTERFACE_INCLUDE_DIRECTORIES ${LMDB_INCLUDE_DIR})
endif()

# HTTP (the `http` tool, and the servers of vigil's tests and bench):
# Debian's cpp-httplib is a compiled library built with OpenSSL, zlib and
# brotli. Its .pc file carries the CPPHTTPLIB_*_SUPPORT definitions that
# make the header match the library, and needs those three -dev packages to
# resolve.
if(NOT TARGET PkgConfig::HTTPLIB)
  find_package(PkgConfig QUIET)
  if(PKG_CONFIG_FOUND)
    pkg_check_modules(HTTPLIB QUIET IMPORTED_TARGET cpp-httplib)
  endif()
  if(NOT TARGET PkgConfig::HTTPLIB)
    string(APPEND VIGIL_IMPORTS_MISSING
      "cpp-httplib not found through pkg-config: install pkgconf, "
      "libcpp-httplib-dev, libssl-dev, zlib1g-dev and libbrotli-dev. ")
  endif()
endif()
