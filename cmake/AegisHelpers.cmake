# aegis_library(NAME folder-relative sources...): a static library whose
# public headers live in <folder>/include and private ones in <folder>/src.
function(aegis_library name)
  add_library(${name} STATIC ${ARGN})
  target_include_directories(${name} PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include
                                     PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
  target_compile_options(${name} PRIVATE ${AEGIS_WARNINGS})
endfunction()

function(aegis_program name)
  add_executable(${name} ${ARGN})
  target_compile_options(${name} PRIVATE ${AEGIS_WARNINGS})
endfunction()

# aegis_unit_test(NAME SOURCES... LIBS ...): a cmocka test registered with ctest.
function(aegis_unit_test name)
  cmake_parse_arguments(T "" "" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_compile_options(${name} PRIVATE ${AEGIS_WARNINGS})
  target_link_libraries(${name} PRIVATE ${T_LIBS} PkgConfig::CMOCKA)
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  add_test(NAME ${name} COMMAND ${name})
  set(labels unit ${T_LABELS})
  set_tests_properties(${name} PROPERTIES LABELS "${labels}" TIMEOUT 120)
endfunction()

# aegis_fuzz_target(NAME SOURCE LIBS... CORPUS dir): the libFuzzer entry point
# LLVMFuzzerTestOneInput in SOURCE. Always built as a corpus replayer that runs
# under ctest; with AEGIS_FUZZ=ON (clang) also as a real libFuzzer binary.
function(aegis_fuzz_target name)
  cmake_parse_arguments(F "" "SOURCE;CORPUS" "LIBS" ${ARGN})
  add_executable(${name}_replay ${F_SOURCE} ${CMAKE_SOURCE_DIR}/tests/fuzz/replay_main.c)
  target_compile_options(${name}_replay PRIVATE ${AEGIS_WARNINGS})
  target_link_libraries(${name}_replay PRIVATE ${F_LIBS})
  set_target_properties(${name}_replay PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  add_test(NAME ${name}_replay COMMAND ${name}_replay ${F_CORPUS})
  set_tests_properties(${name}_replay PROPERTIES LABELS "unit;fuzz" TIMEOUT 300)
  if(AEGIS_FUZZ)
    add_executable(${name} ${F_SOURCE})
    target_compile_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_libraries(${name} PRIVATE ${F_LIBS})
    set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/fuzz)
  endif()
endfunction()
