# gRPC wire layer tests (grpc_wire.c, grpc_status.c, codec_zstd.c), included
# from tests/transport/CMakeLists.txt. grpc_wire.h is private to transport/,
# hence the extra include directory.
aegis_unit_test(test_grpc_wire SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_grpc_wire.c
                LIBS aegis_transport)
target_include_directories(test_grpc_wire PRIVATE ${CMAKE_SOURCE_DIR}/transport/src)

# Links zstd itself to produce frames without a declared size, as a streaming
# peer sends them.
aegis_unit_test(test_codec_zstd SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_codec_zstd.c
                LIBS aegis_transport PkgConfig::ZSTD)
target_include_directories(test_codec_zstd PRIVATE ${CMAKE_SOURCE_DIR}/transport/src)

foreach(name grpc_deframer grpc_headers grpc_zstd_decompress)
  aegis_fuzz_target(fuzz_${name} SOURCE ${CMAKE_SOURCE_DIR}/tests/fuzz/fuzz_${name}.c
                    LIBS aegis_transport CORPUS ${CMAKE_SOURCE_DIR}/tests/fuzz/corpus/${name})
  target_include_directories(fuzz_${name}_replay PRIVATE ${CMAKE_SOURCE_DIR}/transport/src)
  if(TARGET fuzz_${name})
    target_include_directories(fuzz_${name} PRIVATE ${CMAKE_SOURCE_DIR}/transport/src)
  endif()
endforeach()
