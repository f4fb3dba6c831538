#ifndef RQAT_CMPI_SHIM_H
#define RQAT_CMPI_SHIM_H
#include <mpi.h>

// Open MPI's handles are macros over addresses of global structs; Swift cannot import
// them, so each one is returned by an inline getter.
static inline MPI_Comm rqat_mpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Comm rqat_mpi_comm_null(void) { return MPI_COMM_NULL; }
static inline MPI_Datatype rqat_mpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype rqat_mpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Datatype rqat_mpi_byte(void) { return MPI_BYTE; }
static inline MPI_Datatype rqat_mpi_int32(void) { return MPI_INT32_T; }
static inline MPI_Datatype rqat_mpi_uint16(void) { return MPI_UINT16_T; }
static inline MPI_Datatype rqat_mpi_uint64(void) { return MPI_UINT64_T; }
static inline MPI_Op rqat_mpi_sum(void) { return MPI_SUM; }
static inline MPI_Op rqat_mpi_max(void) { return MPI_MAX; }
static inline MPI_Op rqat_mpi_min(void) { return MPI_MIN; }
static inline MPI_Request rqat_mpi_request_null(void) { return MPI_REQUEST_NULL; }
static inline MPI_Status *rqat_mpi_status_ignore(void) { return MPI_STATUS_IGNORE; }
static inline void *rqat_mpi_in_place(void) { return MPI_IN_PLACE; }
static inline int rqat_mpi_any_source(void) { return MPI_ANY_SOURCE; }
static inline int rqat_mpi_any_tag(void) { return MPI_ANY_TAG; }
static inline int rqat_mpi_undefined(void) { return MPI_UNDEFINED; }
static inline int rqat_mpi_success(void) { return MPI_SUCCESS; }
static inline MPI_Errhandler rqat_mpi_errors_return(void) { return MPI_ERRORS_RETURN; }

#endif
