#ifndef LNLENS_CLIBFUZZER_H
#define LNLENS_CLIBFUZZER_H
#include <stddef.h>
#include <stdint.h>

/// Runs libFuzzer's driver (https://llvm.org/docs/LibFuzzer.html, `LLVMFuzzerRunDriver`) on
/// `argc`/`argv` with `callback` as the target, and returns its exit status; returns -1 without
/// running anything when the binary was built without `-sanitize=fuzzer`.
int lnlens_libfuzzer_run(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif
