import Foundation
import Model
import RL
import Tensors
import TestSupport
import Train
import XCTest

/// Asynchronous rollouts (`maxLag`), stale completions, and recorded / replayed rollouts.
extension RolloutTests {
    /// With lag 1, batch 2 is sampled right after batch 1 is drawn, from the policy before the
    /// update on batch 1: it equals what a synchronous source samples from the old weights.
    func testLagOneSamplesTheNextBatchFromThePolicyBeforeTheUpdate() throws {
        let a = try makePolicy(), b = try makePolicy()
        var lagged = settings()
        lagged.maxLag = 1
        let async = try RolloutSource(problems: Self.problems, policy: a.decoder, format: a.format, settings: lagged,
                                      seed: 5, position: DataPosition(), padId: 0)
        let sync = try RolloutSource(problems: Self.problems, policy: b.decoder, format: b.format, settings: settings(),
                                     seed: 5, position: DataPosition(), padId: 0)
        let async1 = try async.nextBatch()
        XCTAssertEqual(async.position, DataPosition(epoch: 0, index: 2), "the position is the returned batch's, not the in-flight one's")
        XCTAssertEqual(async.lastStats?.lag, 0)
        // An "update": every weight of the async policy moves.
        for p in a.decoder.parameters { for i in 0..<p.value.count { p.value.ptr[i] *= 1.5 } }
        let async2 = try async.nextBatch()
        XCTAssertEqual(async.lastStats?.lag, 1)
        XCTAssertEqual(async.lastStats?.droppedStale, 0)
        let sync1 = try sync.nextBatch(), sync2 = try sync.nextBatch()
        XCTAssertEqual(async1.tokens, sync1.tokens)
        XCTAssertEqual(async2.tokens, sync2.tokens, "batch 2 came from the weights before the update")
        XCTAssertEqual(async2.rollout!.behaviourLogProbs, sync2.rollout!.behaviourLogProbs)
        // Batch 3 was sampled after the update: it differs from the old policy's.
        XCTAssertNotEqual(try async.nextBatch().tokens, try sync.nextBatch().tokens)
    }

    /// A generator that answers batch 2 from a policy 2 versions old: with maxLag 1 its groups are
    /// dropped whole (no loss, advantage 0) and counted.
    func testCompletionsOlderThanTheLagAreDroppedWithTheirGroups() throws {
        final class Stale: RolloutGenerator {
            let inner: RolloutGenerator
            var batches = 0
            init(_ inner: RolloutGenerator) { self.inner = inner }
            func submit(_ requests: [GenerationRequest], version: Int) throws { try inner.submit(requests, version: version) }
            func collect() throws -> [SampledCompletion] {
                batches += 1
                var sampled = try inner.collect()
                // Batch 2's second completion is labelled as sampled 3 versions back.
                if batches == 2 { sampled[1].version -= 3 }
                return sampled
            }
        }
        let policy = try makePolicy()
        var lagged = settings()
        lagged.maxLag = 1
        let source = try RolloutSource(problems: Self.problems, policy: policy.decoder, format: policy.format, settings: lagged,
                                       seed: 5, position: DataPosition(), padId: 0,
                                       generator: Stale(LocalRollouts(policy: policy.decoder, stopTokens: policy.format.stopTokens)))
        _ = try source.nextBatch()
        let batch = try source.nextBatch()
        let stats = try XCTUnwrap(source.lastStats)
        XCTAssertEqual(stats.droppedStale, 3, "the whole first group (3 completions)")
        XCTAssertEqual(stats.lag, 4)
        let rowTokens = 3 * batch.seqLen
        XCTAssertTrue(batch.lossMask[0..<rowTokens].allSatisfy { $0 == 0 }, "the dropped group carries no loss")
        XCTAssertTrue(batch.rollout!.advantages[0..<rowTokens].allSatisfy { $0 == 0 })
        XCTAssertGreaterThan(batch.lossMask[rowTokens...].reduce(0, +), 0, "the other group trains")
    }

    /// Batches recorded while sampling are read back as the same rollout batches; a replay asked
    /// for other requests is refused naming the option.
    func testRecordedRolloutsReplayAsTheSameBatches() throws {
        let policy = try makePolicy()
        let file = try makeScratchDirectory("rqat-rollouts").appendingPathComponent("rollouts.jsonl")
        let recorder = try RecordingRollouts(LocalRollouts(policy: policy.decoder, stopTokens: policy.format.stopTokens), to: file)
        let recording = try RolloutSource(problems: Self.problems, policy: policy.decoder, format: policy.format, settings: settings(),
                                          seed: 5, position: DataPosition(), padId: 0, generator: recorder)
        let sampled = [try recording.nextBatch(), try recording.nextBatch()]

        let other = try makePolicy(scheme: nil)
        let replay = try RolloutSource(problems: Self.problems, policy: other.decoder, format: other.format, settings: settings(),
                                       seed: 5, position: DataPosition(), padId: 0, generator: try ReplayedRollouts(from: file))
        for (i, original) in sampled.enumerated() {
            let replayed = try replay.nextBatch()
            XCTAssertEqual(replayed.tokens, original.tokens, "batch \(i + 1)")
            XCTAssertEqual(replayed.lossMask, original.lossMask)
            XCTAssertEqual(replayed.rollout!.advantages, original.rollout!.advantages)
            XCTAssertEqual(replayed.rollout!.behaviourLogProbs, original.rollout!.behaviourLogProbs)
        }
        XCTAssertThrowsError(try replay.nextBatch()) { XCTAssertTrue("\($0)".contains("holds 2 batches"), "\($0)") }

        let reseeded = try RolloutSource(problems: Self.problems, policy: other.decoder, format: other.format, settings: settings(),
                                         seed: 6, position: DataPosition(), padId: 0, generator: try ReplayedRollouts(from: file))
        XCTAssertThrowsError(try reseeded.nextBatch()) { XCTAssertTrue("\($0)".contains("--replay-rollouts"), "\($0)") }

        try Data("{\"seeds\": [1]".utf8).write(to: file)
        XCTAssertThrowsError(try ReplayedRollouts(from: file)) { XCTAssertTrue("\($0)".contains("line 1"), "\($0)") }
    }
}
