# Third-party libraries as imported targets. wolfSSL and ngtcp2 come from the
# bootstrap prefix (static); the rest from Debian's -dev packages.
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)

if(NOT AEGIS_DEPS_PREFIX OR NOT EXISTS "${AEGIS_DEPS_PREFIX}/.complete")
  message(FATAL_ERROR
    "AEGIS_DEPS_PREFIX is not set or not a finished dependency prefix ('${AEGIS_DEPS_PREFIX}'). "
    "Run 'make' or 'make test' from the top of the checkout (they run tools/bootstrap.sh), "
    "or pass -DAEGIS_DEPS_PREFIX=$(tools/bootstrap.sh).")
endif()

function(aegis_import_static target lib)
  if(NOT EXISTS "${AEGIS_DEPS_PREFIX}/lib/${lib}")
    message(FATAL_ERROR "${AEGIS_DEPS_PREFIX}/lib/${lib} is missing: delete ${AEGIS_DEPS_PREFIX} and rerun tools/bootstrap.sh")
  endif()
  add_library(${target} STATIC IMPORTED GLOBAL)
  set_target_properties(${target} PROPERTIES
    IMPORTED_LOCATION "${AEGIS_DEPS_PREFIX}/lib/${lib}"
    INTERFACE_SYSTEM_INCLUDE_DIRECTORIES "${AEGIS_DEPS_PREFIX}/include"
    INTERFACE_INCLUDE_DIRECTORIES "${AEGIS_DEPS_PREFIX}/include")
endfunction()

aegis_import_static(aegis_dep_wolfssl libwolfssl.a)
# wolfSSL's options.h must be seen before any other wolfSSL header.
set_property(TARGET aegis_dep_wolfssl APPEND PROPERTY INTERFACE_COMPILE_DEFINITIONS WOLFSSL_USE_OPTIONS_H)
set_property(TARGET aegis_dep_wolfssl APPEND PROPERTY INTERFACE_LINK_LIBRARIES m Threads::Threads)
aegis_import_static(aegis_dep_ngtcp2 libngtcp2.a)
set_property(TARGET aegis_dep_ngtcp2 APPEND PROPERTY INTERFACE_COMPILE_DEFINITIONS NGTCP2_STATICLIB)
aegis_import_static(aegis_dep_ngtcp2_crypto libngtcp2_crypto_wolfssl.a)
set_property(TARGET aegis_dep_ngtcp2_crypto APPEND PROPERTY INTERFACE_LINK_LIBRARIES aegis_dep_ngtcp2 aegis_dep_wolfssl)

pkg_check_modules(NGHTTP3 REQUIRED IMPORTED_TARGET libnghttp3>=1.8)
pkg_check_modules(PROTOBUFC REQUIRED IMPORTED_TARGET libprotobuf-c>=1.4)
pkg_check_modules(ZSTD REQUIRED IMPORTED_TARGET libzstd)
pkg_check_modules(LIBPQ REQUIRED IMPORTED_TARGET libpq)
pkg_check_modules(LIBBPF REQUIRED IMPORTED_TARGET libbpf>=1.1)
pkg_check_modules(CMOCKA REQUIRED IMPORTED_TARGET cmocka)
pkg_check_modules(MHD REQUIRED IMPORTED_TARGET libmicrohttpd)
pkg_check_modules(JSONC REQUIRED IMPORTED_TARGET json-c)

find_path(LIBEV_INCLUDE_DIR ev.h REQUIRED)
find_library(LIBEV_LIBRARY ev REQUIRED)
add_library(aegis_dep_libev UNKNOWN IMPORTED GLOBAL)
set_target_properties(aegis_dep_libev PROPERTIES IMPORTED_LOCATION "${LIBEV_LIBRARY}"
  INTERFACE_INCLUDE_DIRECTORIES "${LIBEV_INCLUDE_DIR}")

find_program(PROTOC_C protoc-c REQUIRED)
