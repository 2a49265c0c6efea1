// OpenBLAS's CBLAS interface (Debian: libopenblas-dev puts cblas.h under the multiarch include dir).
#include <cblas.h>
// OpenBLAS extras used to report the kernel in use and control threads.
char *openblas_get_corename(void);
char *openblas_get_config(void);
int openblas_get_num_threads(void);
void openblas_set_num_threads(int num_threads);
// glibc's mallopt, for MemoryTuning (not in Swift's Glibc module).
#include <malloc.h>
// LAPACK's symmetric eigensolver (OpenBLAS bundles LAPACK), for the SVD of W_U (`lnlens neurons`).
void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w, double *work,
             const int *lwork, int *iwork, const int *liwork, int *info);
