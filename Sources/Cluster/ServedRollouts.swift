import Foundation
import Model
import Tensors
import Train

/// RL rollouts sampled on the serving ranks. To submit a batch the lead student sends them the
/// policy as it is now (`PolicySync`, once per version), then the requests, cut into one share
/// per serving rank, without waiting; collecting waits for the oldest batch's completions,
/// which come back with the version of the policy that made them, and the lead broadcasts them
/// to the other students, so every student trains on the same batch.
///
/// A serving rank handles its messages in the order they were sent, so every batch comes from
/// the version it was submitted with; an answer from another version stops the run.
package final class ServedRollouts: RolloutGenerator {
    private let world: Communicator
    private let students: Communicator
    private let teacherRanks: [Int]
    private let vocab: Int
    private let codec: FrameCodec
    /// The lead's current policy as a snapshot of the given version.
    private let snapshot: (Int) -> PolicySnapshot
    private let bfloat16: Set<String>
    private var syncedVersion: Int?
    private var syncSends: [Request] = []
    /// Batches submitted and not collected (the lead holds their sends; every student their sizes).
    private var inFlight: [(pending: PendingGeneration?, version: Int, count: Int)] = []
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

    package func submit(_ requests: [GenerationRequest], version: Int) throws {
        guard students.rank == 0 else {
            inFlight.append((nil, version, requests.count))
            return
        }
        if syncedVersion != version {
            let start = Date()
            let policy = TensorFrame.encodeMessage(PolicySync.frames(snapshot(version), bfloat16: bfloat16), codec: codec)
            syncSends = try syncSends.filter { try !$0.test() }
            for teacher in teacherRanks { syncSends.append(try world.sendNonBlocking(policy, to: teacher, tag: Tag.policySync)) }
            syncSeconds += Date().timeIntervalSince(start)
            syncBytes += policy.count
            syncs += 1
            syncedVersion = version
        }
        let pending = try sendGenerationRequests(requests, world: world, teacherRanks: teacherRanks, vocab: vocab, codec: codec)
        inFlight.append((pending, version, requests.count))
    }

    package func collect() throws -> [SampledCompletion] {
        guard !inFlight.isEmpty else { throw ClusterError("rank \(world.rank): no rollout batch was submitted to collect") }
        let batch = inFlight.removeFirst()
        var bytes: [UInt8] = []
        if let pending = batch.pending {
            let (results, versions) = try pending.receive()
            if let other = versions.first(where: { $0 != batch.version }) {
                throw ClusterError("a serving rank answered with policy version \(other ?? -1) where \(batch.version) was sent; the ranks are out of step")
            }
            bytes = TensorFrame.encodeMessage(GenerationMessage.responseFrames(id: 0, results, vocab: vocab, version: batch.version), codec: codec)
        }
        if students.size > 1 { try students.broadcast(&bytes, root: 0) }
        let results = try GenerationMessage.results(from: try TensorFrame.decodeMessage(bytes, from: world.rank - students.rank),
                                                    id: 0, count: batch.count, rank: 0)
        return results.map { SampledCompletion(result: $0, version: batch.version) }
    }

    /// Receives what is still in flight (the lead, at the end of a run): a serving rank finishes
    /// only once its answers are taken.
    package func drain() throws {
        while !inFlight.isEmpty { _ = try inFlight.removeFirst().pending?.receive() }
        for s in syncSends { try s.wait() }
        syncSends = []
    }
}
