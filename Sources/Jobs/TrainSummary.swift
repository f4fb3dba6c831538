import Foundation

/// What one rank of `rqat train` did, written at its end to OUT/summary-rank<N>.json (N = world
/// rank) for tools that compare runs (`rqat bench cluster`); the same figures as the ranks'
/// progress lines on stderr, at full precision.
package struct TrainSummary: Codable, Equatable, Sendable {
    /// A teacher rank: the tokens it ran the teacher on, while busy and over its whole serve loop.
    package struct Teacher: Codable, Equatable, Sendable {
        package var tokens: Int
        package var busySeconds: Double
        package var wallSeconds: Double

        enum CodingKeys: String, CodingKey {
            case tokens
            case busySeconds = "busy_s"
            case wallSeconds = "wall_s"
        }
    }

    /// A student rank: its training time, how long it waited for teacher signal and how much
    /// arrived, and (data-parallel students only) the gradient allreduce.
    package struct Student: Codable, Equatable, Sendable {
        package var trainSeconds: Double
        package var teacherWaitSeconds: Double
        package var signalBytes: Int
        package var allreduceMB: Double?
        package var allreduceWaitSeconds: Double?

        enum CodingKeys: String, CodingKey {
            case trainSeconds = "train_s"
            case teacherWaitSeconds = "teacher_wait_s"
            case signalBytes = "signal_bytes"
            case allreduceMB = "allreduce_mb"
            case allreduceWaitSeconds = "allreduce_wait_s"
        }
    }

    package var rank: Int
    package var worldSize: Int
    /// "teacher" or "student" (Roles.Role).
    package var role: String
    /// Index among the ranks of the same role.
    package var roleIndex: Int
    package var teacher: Teacher?
    package var student: Student?

    enum CodingKeys: String, CodingKey {
        case rank, role, teacher, student
        case worldSize = "world_size"
        case roleIndex = "role_index"
    }

    package static func url(runDir: URL, rank: Int) -> URL { runDir.appendingPathComponent("summary-rank\(rank).json") }

    package func write(runDir: URL) throws { try JobJSON.write(self, to: Self.url(runDir: runDir, rank: rank)) }

    package static func read(runDir: URL, rank: Int) throws -> TrainSummary {
        try JobJSON.read(TrainSummary.self, from: url(runDir: runDir, rank: rank),
                         missing: "rank \(rank) did not finish `rqat train` (its stderr says why); run it again")
    }
}
