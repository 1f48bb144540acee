# Shared build helpers: dependency discovery and one helper per component,
# in the manner of CAF's caf_add_component.

find_package(Threads REQUIRED)
find_package(Protobuf REQUIRED)
find_package(spdlog REQUIRED)
# SHA-256 of tool requests (idempotency fingerprints).
find_package(OpenSSL REQUIRED)

# HTTP (the `http` tool, and the servers of its tests and bench): Debian's
# cpp-httplib is a compiled library built with OpenSSL, zlib and brotli. Its
# .pc file carries the CPPHTTPLIB_*_SUPPORT definitions that make the header
# match the library, and needs those three -dev packages to resolve.
find_package(PkgConfig REQUIRED)
pkg_check_modules(HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)

# Debian ships no CMake package config for CAF 0.17.
find_path(CAF_INCLUDE_DIR caf/all.hpp REQUIRED)
find_library(CAF_CORE_LIBRARY caf_core REQUIRED)
find_library(CAF_IO_LIBRARY caf_io REQUIRED)
if(NOT TARGET caf::core)
  add_library(caf::core UNKNOWN IMPORTED)
  set_target_properties(caf::core PROPERTIES
    IMPORTED_LOCATION ${CAF_CORE_LIBRARY}
    INTERFACE_INCLUDE_DIRECTORIES ${CAF_INCLUDE_DIR}
    INTERFACE_LINK_LIBRARIES Threads::Threads)
  add_library(caf::io UNKNOWN IMPORTED)
  set_target_properties(caf::io PROPERTIES
    IMPORTED_LOCATION ${CAF_IO_LIBRARY}
    INTERFACE_LINK_LIBRARIES caf::core)
endif()

# LMDB: Debian's liblmdb-dev ships no CMake package config.
find_path(LMDB_INCLUDE_DIR lmdb.h REQUIRED)
find_library(LMDB_LIBRARY lmdb REQUIRED)
if(NOT TARGET lmdb::lmdb)
  add_library(lmdb::lmdb UNKNOWN IMPORTED)
  set_target_properties(lmdb::lmdb PROPERTIES
    IMPORTED_LOCATION ${LMDB_LIBRARY}
    INTERFACE_INCLUDE_DIRECTORIES ${LMDB_INCLUDE_DIR})
endif()

# One precompiled header for every translation unit that includes CAF.
set(VIGIL_CAF_PCH <caf/all.hpp>)

# vigil_add_component(NAME
#   SOURCES src...       # .cpp files
#   DEPS targets...      # public dependencies
#   [PCH])               # precompile caf/all.hpp for this target
# Creates library vigil_NAME (alias vigil::NAME) whose public headers live in
# ${CMAKE_CURRENT_SOURCE_DIR}/vigil/NAME.
function(vigil_add_component name)
  cmake_parse_arguments(arg "PCH" "" "SOURCES;DEPS" ${ARGN})
  add_library(vigil_${name} STATIC ${arg_SOURCES})
  add_library(vigil::${name} ALIAS vigil_${name})
  target_include_directories(vigil_${name} PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
  target_link_libraries(vigil_${name} PUBLIC ${arg_DEPS})
  target_compile_options(vigil_${name} PRIVATE -Wall -Wextra -Wno-unused-parameter)
  if(arg_PCH)
    target_precompile_headers(vigil_${name} PRIVATE ${VIGIL_CAF_PCH})
  endif()
endfunction()

# vigil_add_proto(TARGET files.proto...)
# Generates C++ for the given schemas into a static library TARGET; a schema
# at dir/x.proto is included as "dir/x.pb.h".
function(vigil_add_proto target)
  add_library(${target} STATIC ${ARGN})
  protobuf_generate(TARGET ${target} LANGUAGE cpp
                    IMPORT_DIRS ${CMAKE_CURRENT_SOURCE_DIR}
                    PROTOC_OUT_DIR ${CMAKE_CURRENT_BINARY_DIR})
  target_include_directories(${target} PUBLIC ${CMAKE_CURRENT_BINARY_DIR})
  target_link_libraries(${target} PUBLIC protobuf::libprotobuf)
endfunction()
