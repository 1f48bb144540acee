# Shared build helpers: dependency discovery and one helper per component,
# in the manner of CAF's caf_add_component.

include(GNUInstallDirs)

find_package(Threads REQUIRED)
find_package(Protobuf REQUIRED)
find_package(spdlog REQUIRED)
# SHA-256 of tool requests (idempotency fingerprints).
find_package(OpenSSL REQUIRED)
find_package(yaml-cpp REQUIRED)
# The imported targets of CAF, LMDB and cpp-httplib, which ship no CMake
# package config; vigilConfig.cmake includes the same file.
include(vigilImports)
if(VIGIL_IMPORTS_MISSING)
  message(FATAL_ERROR "vigil: ${VIGIL_IMPORTS_MISSING}")
endif()

# One precompiled header for every translation unit that includes CAF.
set(VIGIL_CAF_PCH <caf/all.hpp>)

# vigil_add_component(NAME
#   SOURCES src...       # .cpp files
#   DEPS targets...      # public dependencies
#   [PCH]                # precompile caf/all.hpp for this target
#   [INTERNAL_DETAIL])   # vigil/NAME/detail/ is for its sources and tests only
# Creates library vigil_NAME (alias vigil::NAME, exported as vigil::NAME)
# whose public headers live in ${CMAKE_CURRENT_SOURCE_DIR}/vigil/NAME, and
# installs both (see cmake/vigilInstall.cmake).
function(vigil_add_component name)
  cmake_parse_arguments(arg "PCH;INTERNAL_DETAIL" "" "SOURCES;DEPS" ${ARGN})
  add_library(vigil_${name} STATIC ${arg_SOURCES})
  add_library(vigil::${name} ALIAS vigil_${name})
  set_target_properties(vigil_${name} PROPERTIES EXPORT_NAME ${name})
  target_include_directories(vigil_${name} PUBLIC
    $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  target_link_libraries(vigil_${name} PUBLIC ${arg_DEPS})
  # Exported too: vigil's headers need C++17 of every program that includes
  # them.
  target_compile_features(vigil_${name} PUBLIC cxx_std_17)
  target_compile_options(vigil_${name} PRIVATE -Wall -Wextra -Wno-unused-parameter)
  if(arg_PCH)
    target_precompile_headers(vigil_${name} PRIVATE ${VIGIL_CAF_PCH})
  endif()
  install(TARGETS vigil_${name} EXPORT vigilTargets
          ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT development)
  set(skip)
  if(arg_INTERNAL_DETAIL)
    set(skip PATTERN detail EXCLUDE)
  endif()
  install(DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR}/vigil/
          DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/vigil COMPONENT development
          FILES_MATCHING PATTERN "*.hpp" ${skip})
endfunction()

# vigil_add_proto(TARGET files.proto...)
# Generates C++ for the given schemas into a static library TARGET; a schema
# at dir/x.proto is included as "dir/x.pb.h". Not installed: proto/ installs
# vigil_proto itself.
function(vigil_add_proto target)
  add_library(${target} STATIC ${ARGN})
  protobuf_generate(TARGET ${target} LANGUAGE cpp
                    IMPORT_DIRS ${CMAKE_CURRENT_SOURCE_DIR}
                    PROTOC_OUT_DIR ${CMAKE_CURRENT_BINARY_DIR})
  target_include_directories(${target} PUBLIC
    $<BUILD_INTERFACE:${CMAKE_CURRENT_BINARY_DIR}>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  target_link_libraries(${target} PUBLIC protobuf::libprotobuf)
  target_compile_features(${target} PUBLIC cxx_std_17)
endfunction()
