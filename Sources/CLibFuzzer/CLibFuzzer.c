#include "CLibFuzzer.h"

// A weak reference: libclang_rt.fuzzer defines it when the binary is linked with
// -sanitize=fuzzer; in an ordinary build it stays null and lnlens-fuzz replays files instead.
extern int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *, size_t))
    __attribute__((weak));

int lnlens_libfuzzer_run(int *argc, char ***argv, int (*callback)(const uint8_t *, size_t)) {
    if (!LLVMFuzzerRunDriver) return -1;
    return LLVMFuzzerRunDriver(argc, argv, callback);
}
