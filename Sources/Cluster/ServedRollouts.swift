import Foundation
import Model
import Tensors
import Train

/// RL rollouts sampled on the serving ranks: before each batch the lead student sends them the
/// policy as it is now (`PolicySync`), then the requests, cut into one share per serving rank;
/// the completions come back with the version of the policy that made them, and the lead
/// broadcasts them to the other students, so every student trains on the same batch.
///
/// Rollouts are synchronous: each batch is sampled from the policy after the last update
/// (lag 0), and a completion of any other version stops the run.
package final class ServedRollouts: RolloutGenerator {
    private let world: Communicator
    private let students: Communicator
    private let teacherRanks: [Int]
    private let vocab: Int
    private let codec: FrameCodec
    /// The lead's current policy as a snapshot of the given version.
    private let snapshot: (Int) -> PolicySnapshot
    private let bfloat16: Set<String>
    package private(set) var syncBytes = 0
    package private(set) var syncSeconds: Double = 0
    package private(set) var syncs = 0

    /// `students`: the students' communicator (rank 0 leads). `bfloat16`: tensors sent in bf16.
    package init(world: Communicator, students: Communicator, teacherRanks: [Int], vocab: Int,
                 codec: FrameCodec = .shuffledZstd(level: 3), bfloat16: Set<String> = [],
                 snapshot: @escaping (Int) -> PolicySnapshot) {
        self.world = world
        self.students = students
        self.teacherRanks = teacherRanks
        self.vocab = vocab
        self.codec = codec
        self.bfloat16 = bfloat16
        self.snapshot = snapshot
    }

    package func generate(_ requests: [GenerationRequest], version: Int) throws -> [GenerationResult] {
        var bytes: [UInt8] = []
        if students.rank == 0 {
            let start = Date()
            let policy = TensorFrame.encodeMessage(PolicySync.frames(snapshot(version), bfloat16: bfloat16), codec: codec)
            for teacher in teacherRanks { try world.send(policy, to: teacher, tag: Tag.policySync) }
            syncSeconds += Date().timeIntervalSince(start)
            syncBytes += policy.count
            syncs += 1
            let (results, versions) = try generateOnTeachersWithVersions(requests, world: world, teacherRanks: teacherRanks,
                                                                           vocab: vocab, codec: codec)
            if let stale = versions.first(where: { $0 != version }) {
                throw ClusterError("a serving rank answered with policy version \(stale ?? -1) where \(version) was sent; the ranks are out of step")
            }
            bytes = TensorFrame.encodeMessage(GenerationMessage.responseFrames(id: 0, results, vocab: vocab, version: version), codec: codec)
        }
        if students.size > 1 { try students.broadcast(&bytes, root: 0) }
        return try GenerationMessage.results(from: try TensorFrame.decodeMessage(bytes, from: world.rank - students.rank),
                                             id: 0, count: requests.count, rank: 0)
    }
}
