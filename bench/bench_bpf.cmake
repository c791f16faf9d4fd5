# aegis-bench-bpf: TC program cost and policy publish/swap times (needs root).
aegis_program(aegis-bench-bpf ${CMAKE_CURRENT_SOURCE_DIR}/bpf_bench.c
              ${CMAKE_SOURCE_DIR}/tests/bpf/bpf_testenv.c)
target_include_directories(aegis-bench-bpf PRIVATE ${CMAKE_SOURCE_DIR}/tests/bpf)
target_link_libraries(aegis-bench-bpf PRIVATE aegis_bpf aegis_policy aegis_base aegis_libbpf)
