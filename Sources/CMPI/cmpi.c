#include "cmpi.h"
#include <stdlib.h>
#include <time.h>

#ifdef LNLENS_MPI
#include <limits.h>
#include <mpi.h>

int lnlens_mpi_built(void) { return 1; }

const char *lnlens_mpi_library_version(void) {
    static char version[MPI_MAX_LIBRARY_VERSION_STRING];
    int length = 0;
    MPI_Get_library_version(version, &length);
    for (int i = 0; i < length; i++) {
        if (version[i] == '\n' || version[i] == ',') { version[i] = 0; break; }
    }
    return version;
}

int lnlens_mpi_init(void) {
    int provided = 0;
    return MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) == MPI_SUCCESS ? 0 : 1;
}

int lnlens_mpi_rank(void) {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    return rank;
}

int lnlens_mpi_size(void) {
    int size = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    return size;
}

// MPI counts are ints: larger buffers go in slices of at most 2^30 elements.
#define SLICE (1L << 30)

int lnlens_mpi_allreduce_float(float *data, long count) {
    for (long start = 0; start < count; start += SLICE) {
        int n = (int)(count - start < SLICE ? count - start : SLICE);
        if (MPI_Allreduce(MPI_IN_PLACE, data + start, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS) return 1;
    }
    return 0;
}

int lnlens_mpi_allreduce_double(double *data, long count) {
    for (long start = 0; start < count; start += SLICE) {
        int n = (int)(count - start < SLICE ? count - start : SLICE);
        if (MPI_Allreduce(MPI_IN_PLACE, data + start, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS) return 1;
    }
    return 0;
}

// The non-blocking reductions started and not yet waited for (a step's gradient buckets).
#define MAX_PENDING 4096
static MPI_Request pending[MAX_PENDING];
static int npending = 0;

int lnlens_mpi_iallreduce_float(float *data, long count) {
    for (long start = 0; start < count; start += SLICE) {
        if (npending == MAX_PENDING) return 1;
        int n = (int)(count - start < SLICE ? count - start : SLICE);
        if (MPI_Iallreduce(MPI_IN_PLACE, data + start, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &pending[npending]) != MPI_SUCCESS) return 1;
        npending++;
    }
    return 0;
}

int lnlens_mpi_testall(void) {
    int done = 0;
    return MPI_Testall(npending, pending, &done, MPI_STATUSES_IGNORE) == MPI_SUCCESS ? 0 : 1;
}

int lnlens_mpi_waitall(void) {
    int status = MPI_Waitall(npending, pending, MPI_STATUSES_IGNORE) == MPI_SUCCESS ? 0 : 1;
    npending = 0;
    return status;
}

int lnlens_mpi_bcast(void *data, long count, int root) {
    if (count > INT_MAX) return 1;
    return MPI_Bcast(data, (int)count, MPI_BYTE, root, MPI_COMM_WORLD) == MPI_SUCCESS ? 0 : 1;
}

int lnlens_mpi_barrier(void) { return MPI_Barrier(MPI_COMM_WORLD) == MPI_SUCCESS ? 0 : 1; }

void lnlens_mpi_abort(int code) {
    MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}

int lnlens_mpi_finalize(void) { return MPI_Finalize() == MPI_SUCCESS ? 0 : 1; }

double lnlens_mpi_wtime(void) { return MPI_Wtime(); }

#else

int lnlens_mpi_built(void) { return 0; }
const char *lnlens_mpi_library_version(void) { return ""; }
int lnlens_mpi_init(void) { return 0; }
int lnlens_mpi_rank(void) { return 0; }
int lnlens_mpi_size(void) { return 1; }
int lnlens_mpi_allreduce_float(float *data, long count) { (void)data; (void)count; return 0; }
int lnlens_mpi_allreduce_double(double *data, long count) { (void)data; (void)count; return 0; }
int lnlens_mpi_iallreduce_float(float *data, long count) { (void)data; (void)count; return 0; }
int lnlens_mpi_testall(void) { return 0; }
int lnlens_mpi_waitall(void) { return 0; }
int lnlens_mpi_bcast(void *data, long count, int root) { (void)data; (void)count; (void)root; return 0; }
int lnlens_mpi_barrier(void) { return 0; }
void lnlens_mpi_abort(int code) { exit(code); }
int lnlens_mpi_finalize(void) { return 0; }
double lnlens_mpi_wtime(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

#endif
