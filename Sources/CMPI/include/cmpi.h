// The few MPI calls lnlens makes (Sources/Distributed/Communicator.swift). Built against real MPI
// only with -DLNLENS_MPI and MPI's include and link flags (the Makefile adds them when it finds
// mpicc); otherwise stubs: one process, rank 0, and every collective a no-op.
#ifndef LNLENS_CMPI_H
#define LNLENS_CMPI_H

/// 1 when this build calls a real MPI, else 0.
int lnlens_mpi_built(void);
/// The MPI library's version line (empty without MPI). Valid until the next call.
const char *lnlens_mpi_library_version(void);
/// MPI_Init_thread (MPI_THREAD_FUNNELED); 0 on success.
int lnlens_mpi_init(void);
int lnlens_mpi_rank(void);
int lnlens_mpi_size(void);
/// In-place MPI_Allreduce with MPI_SUM over MPI_COMM_WORLD; 0 on success.
int lnlens_mpi_allreduce_float(float *data, long count);
int lnlens_mpi_allreduce_double(double *data, long count);
/// Starts an in-place MPI_Iallreduce (MPI_SUM) of `count` floats over MPI_COMM_WORLD, kept among
/// the pending requests until `lnlens_mpi_waitall`; 0 on success. `data` must not be touched until then.
int lnlens_mpi_iallreduce_float(float *data, long count);
/// MPI_Testall on the pending requests (drives their progress); 0 on success.
int lnlens_mpi_testall(void);
/// MPI_Waitall on the pending requests, which are then none; 0 on success.
int lnlens_mpi_waitall(void);
/// MPI_Bcast of bytes from `root`; 0 on success.
int lnlens_mpi_bcast(void *data, long count, int root);
int lnlens_mpi_barrier(void);
/// MPI_Abort of the whole job (does not return).
void lnlens_mpi_abort(int code);
int lnlens_mpi_finalize(void);
double lnlens_mpi_wtime(void);

#endif
