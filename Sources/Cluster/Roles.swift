import Foundation

/// Which ranks teach and which train. World ranks 0..<teachers serve the teacher; the others
/// are data-parallel students, each role with its own communicator. With `teachers == 0` (or a
/// world of one rank) every student runs its teacher in-process: the single-process path.
package final class Roles {
    package enum Role: String { case teacher, student }

    package let world: Communicator
    package let teachers: Int
    package let role: Role
    /// The communicator of this rank's role (teachers among themselves, students likewise).
    package let group: Communicator

    /// Checks the world has a rank for every role, then splits it. Every rank computes the
    /// same answer, so a bad layout fails on all ranks before any work, without a hang.
    package init(world: Communicator, teachers requested: Int) throws {
        self.world = world
        // A single process plays both roles whatever --teachers says.
        let teachers = world.size == 1 ? 0 : requested
        guard teachers >= 0 else { throw ClusterError("--teachers must be 0 or more (got \(requested))") }
        guard teachers < world.size else {
            throw ClusterError("--teachers \(teachers) leaves no student among the \(world.size) ranks mpirun started; start at least \(teachers + 1) ranks (mpirun -np \(teachers + 1)) or lower --teachers")
        }
        self.teachers = teachers
        role = world.rank < teachers ? .teacher : .student
        group = try world.split(color: role == .teacher ? 0 : 1, key: world.rank)
    }

    package var teacherRanks: [Int] { Array(0..<teachers) }
    package var students: Int { world.size - teachers }
    /// Teachers live in other processes.
    package var remoteTeachers: Bool { teachers > 0 }

    /// "rank 0 host teacher 0/1 threads 1 | rank 1 host student 0/2 threads 1 | ..." (gathered
    /// from every rank; the same on all).
    package func layoutLine(threads: Int) throws -> String {
        let index = group.rank, count = group.size
        let mine = "rank \(world.rank) \(MPI.processorName) \(role.rawValue) \(index)/\(count) threads \(threads)"
        let all = try world.allGather(Array(mine.utf8))
        return "layout: " + all.map { String(decoding: $0, as: UTF8.self) }.joined(separator: " | ")
    }

    /// Name of a world rank's role, for messages about it.
    package func describe(rank: Int) -> String {
        rank < teachers ? "teacher \(rank) of \(teachers)" : "student \(rank - teachers) of \(students)"
    }
}
