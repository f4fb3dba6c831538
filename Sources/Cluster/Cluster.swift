// The cluster runtime: MPI communicators and roles, tensor frames on the wire, the teacher
// service and data-parallel students. See docs/WIRE.md and docs/SCALING.md.
