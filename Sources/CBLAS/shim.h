// OpenBLAS's CBLAS interface (Debian: libopenblas-dev puts cblas.h under the multiarch include dir).
#include <cblas.h>
// OpenBLAS extras used to report the kernel in use and control threads.
char *openblas_get_corename(void);
char *openblas_get_config(void);
int openblas_get_num_threads(void);
void openblas_set_num_threads(int num_threads);
// glibc's mallopt, for MemoryTuning (not in Swift's Glibc module).
#include <malloc.h>
