// The cluster runtime, transport only: MPI communicators and roles, tensor frames on the wire,
// the teacher service and its links to students, data-parallel gradient allreduce.
// The KD objective and teacher signal it carries live in Train; evaluations in Eval.
// See docs/WIRE.md and docs/SCALING.md.
